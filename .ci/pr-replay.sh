#!/usr/bin/env bash
# The pull-request gate: replay the failures stored by the nightly fuzz job against this
# branch's code and installed versions (`fuzzkv replay`, no Hypothesis: seconds per failure).
# What .github/workflows/pr-replay.yml runs after restoring the nightly databases.
#
# Every SQLite database in FUZZKV_DB_DIR is replayed (all of its models). The databases are
# restored copies: what replay marks `fixed` here is never saved back.
#
# Exit code: 0 = no database yet, or no regression: failures the nightly job already knows as open
# may still fail (they are listed, not blocking); 1 = a failure marked fixed fails again on this
# branch (with FUZZKV_FAIL_ON=any: any stored failure that still fails); 2 = bad input
# (e.g. a database written by another fuzzkv version); 3 = internal error. The worst one wins.
#
# Inputs (environment variables):
#   FUZZKV_DB_DIR        directory holding the restored *.db files     [fuzzkv-db]
#   FUZZKV_OUT           directory for replay logs and summary.md      [fuzzkv-out]
#   FUZZKV_FAIL_ON       new (only regressions block) or any            [new]
#   GITHUB_STEP_SUMMARY  if set, FUZZKV_OUT/summary.md is appended to it as well
set -uo pipefail

dir=${FUZZKV_DB_DIR:-fuzzkv-db}
out=${FUZZKV_OUT:-fuzzkv-out}
mkdir -p "$out" || { echo "Error: cannot create FUZZKV_OUT '$out'." >&2; exit 2; }
summary="$out/summary.md"
echo "## fuzzkv replay of the nightly databases" > "$summary"
echo >> "$summary"

finish() {
  [ -z "${GITHUB_STEP_SUMMARY:-}" ] || cat "$summary" >> "$GITHUB_STEP_SUMMARY"
  echo "pr-replay: exit $1"
  exit "$1"
}

shopt -s nullglob
dbs=("$dir"/*.db)
if [ "${#dbs[@]}" -eq 0 ]; then
  echo "No fuzzkv database in $dir yet (the nightly job has not stored one): nothing to replay, passing."
  echo "No database yet in \`$dir\` (the nightly fuzz job has not run or its cache expired): nothing to replay. **Pass.**" \
    >> "$summary"
  finish 0
fi
command -v fuzzkv > /dev/null || { echo "Error: no 'fuzzkv' command on PATH." >&2; exit 2; }

worst=0
for db in "${dbs[@]}"; do
  name=$(basename "$db" .db)
  echo "--- fuzzkv replay --db sqlite:///$db"
  fuzzkv replay --db "sqlite:///$db" --fail-on "${FUZZKV_FAIL_ON:-new}" 2>&1 | tee "$out/replay-$name.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -le "$worst" ] || worst=$rc
  totals=$(grep -E '^replay:' "$out/replay-$name.log" | tail -n 1)
  totals=${totals#replay: }
  case "$rc" in
    0) echo "- \`$name\`: ${totals:-nothing open}" >> "$summary" ;;
    1)
      echo "- \`$name\`: ${totals}: **failing on this branch:**" >> "$summary"
      grep -E 'STILL FAILS|REOPENED' "$out/replay-$name.log" | sed 's/^/  - /' >> "$summary"
      ;;
    *) echo "- \`$name\`: **replay error** (exit $rc): $(tail -n 1 "$out/replay-$name.log")" >> "$summary" ;;
  esac
done

echo >> "$summary"
case "$worst" in
  0) echo "**Pass**: no regression (failures already known as open may still fail; they do not block)." >> "$summary" ;;
  1) echo "**Fail**: stored failures fail on this branch (\`fuzzkv show ID --db ...\` on the nightly artifact's database prints a reproduction script)." >> "$summary" ;;
  *) echo "**Error** (exit $worst)." >> "$summary" ;;
esac
finish "$worst"
