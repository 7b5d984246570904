#!/usr/bin/env bash
# One night of KV-cache fuzzing for one model: what .github/workflows/nightly-fuzz.yml runs
# in each matrix job, and what tests/test_nightly.py runs for real. Run it from the directory
# a `module:factory` model imports from (the repository root).
#
#   1. replay: `fuzzkv replay` re-checks the open failures stored by earlier nights, marking
#      the ones that pass `fixed` (so a later re-appearance counts as re-opened). Known
#      failures that still fail do NOT fail the night. Skipped when there is no database
#      yet (the first night).
#   2. fuzz: `fuzzkv run --fail-on new` for FUZZKV_BUDGET seconds, storing failures in the
#      same database and writing the HTML report, JUnit XML and a Markdown summary.
#
# Exit code: fuzzkv run's. 0 = no new or re-opened failure (known open ones may remain),
# 1 = new or re-opened failures (listed under "New failures" / "Re-opened failures" in the
# summary), 2 = bad input (settings, model, database), 3 = internal error, 4 = blind, 5 = nothing tested,
# 6 = incomplete (an oracle ran fewer than the 20 examples a time-boxed oracle must run: raise FUZZKV_BUDGET).
#
# Inputs (environment variables):
#   FUZZKV_MODEL         required: registry name (`fuzzkv models`), local directory, or module:factory
#   FUZZKV_SCALE         tiny | full                                        [tiny]
#   FUZZKV_BUDGET        seconds of fuzzing, shared by the oracles          [600]
#                        (shrinking a failure found late may run over it)
#   FUZZKV_DB            SQLite file (or sqlite:/// URL) kept between nights [FUZZKV_OUT/fuzzkv.db]
#   FUZZKV_OUT           directory for report.html, junit.xml, summary.md and logs [fuzzkv-out]
#   FUZZKV_SEED          case seed                       [today's UTC date, YYYYMMDD: new cases each night]
#   FUZZKV_MAX_EXAMPLES  examples per oracle (the cap past the budget)      [100000: the budget decides]
#   FUZZKV_ARGS          more `fuzzkv run` options, split on spaces, e.g. "--backend both --dtype bfloat16"
#   GITHUB_STEP_SUMMARY  if set, FUZZKV_OUT/summary.md is appended to it as well
set -uo pipefail

fail_input() {
  echo "Error: $1" >&2
  exit 2
}

model=${FUZZKV_MODEL:-}
scale=${FUZZKV_SCALE:-tiny}
budget=${FUZZKV_BUDGET:-600}
out=${FUZZKV_OUT:-fuzzkv-out}
db=${FUZZKV_DB:-$out/fuzzkv.db}
seed=${FUZZKV_SEED:-$(date -u +%Y%m%d)}
max_examples=${FUZZKV_MAX_EXAMPLES:-100000}
read -r -a extra <<< "${FUZZKV_ARGS:-}"

[ -n "$model" ] || fail_input "FUZZKV_MODEL is not set. Tip: a registry name from 'fuzzkv models', a directory, or module:factory."
[[ "$budget" =~ ^[0-9]+([.][0-9]+)?$ ]] && [[ ! "$budget" =~ ^0+([.]0+)?$ ]] \
  || fail_input "FUZZKV_BUDGET must be a positive number of seconds, got '$budget'."
[[ "$seed" =~ ^[0-9]+$ ]] || fail_input "FUZZKV_SEED must be a non-negative integer, got '$seed'."
command -v fuzzkv > /dev/null || fail_input "no 'fuzzkv' command on PATH. Tip: pip install fuzzkv (or this repository) first."

# The database: a path (made into an SQLite URL) or a URL; only an SQLite file can be checked for existence.
case "$db" in
  sqlite:///*) url=$db; db_file=${db#sqlite:///} ;;
  *://*) url=$db; db_file= ;;
  *) url="sqlite:///$db"; db_file=$db ;;
esac
mkdir -p "$out" || fail_input "cannot create FUZZKV_OUT '$out'."
[ -z "$db_file" ] || mkdir -p "$(dirname "$db_file")" || fail_input "cannot create the directory of FUZZKV_DB '$db_file'."
summary="$out/summary.md"
: > "$summary"

{
  echo "## fuzzkv nightly: \`$model\` ($scale)"
  echo
  echo "Budget ${budget} s, seed ${seed}, database \`$url\`, fuzzkv $(fuzzkv --version 2>&1 | sed 's/.*version //')."
  echo
} >> "$summary"

# 1. Replay the failures stored by earlier nights.
if [ -n "$db_file" ] && [ ! -f "$db_file" ]; then
  echo "No database at $db_file yet (first night): nothing to replay."
  echo "**Replay:** no database yet (first night), nothing to replay." >> "$summary"
else
  echo "--- fuzzkv replay --db $url --model $model"
  fuzzkv replay --db "$url" --model "$model" 2>&1 | tee "$out/replay.log"
  replay_rc=${PIPESTATUS[0]}
  totals=$(grep -E '^replay:' "$out/replay.log" | tail -n 1)
  totals=${totals#replay: }
  case "$replay_rc" in
    0) echo "**Replay:** ${totals:-no open failures}." >> "$summary" ;;
    1) echo "**Replay:** ${totals} (known open failures still failing do not fail the night)." >> "$summary" ;;
    *)
      echo "**Replay failed** with exit code $replay_rc: $(tail -n 1 "$out/replay.log")" >> "$summary"
      [ -z "${GITHUB_STEP_SUMMARY:-}" ] || cat "$summary" >> "$GITHUB_STEP_SUMMARY"
      exit "$replay_rc"
      ;;
  esac
fi
echo >> "$summary"

# 2. Fuzz for the budget; exit 1 only for new or re-opened failures.
echo "--- fuzzkv run --model $model --scale $scale --max-time $budget --seed $seed ${extra[*]}"
fuzzkv run --model "$model" --scale "$scale" --max-time "$budget" --seed "$seed" \
  --max-examples "$max_examples" --db "$url" \
  --report "$out/report.html" --junit "$out/junit.xml" --summary "$summary" --fail-on new \
  "${extra[@]}" 2>&1 | tee "$out/run.log"
rc=${PIPESTATUS[0]}

case "$rc" in
  0) result="**Result: pass**: no new or re-opened failure (known open failures, if any, are listed above)." ;;
  1) result="**Result: FAIL**: new or re-opened failures, listed above. \`fuzzkv show ID\` prints a reproduction script." ;;
  2) result="**Result: ERROR** (exit 2, bad input): $(grep -E '^Error:' "$out/run.log" | tail -n 1)" ;;
  3) result="**Result: ERROR** (exit 3, internal error): $(tail -n 1 "$out/run.log")" ;;
  4) result="**Result: BLIND** (exit 4): no new failure, but the run could not have seen one (see above)." ;;
  5) result="**Result: NOTHING TESTED** (exit 5): no example ran (see above)." ;;
  6) result="**Result: INCOMPLETE** (exit 6): no new failure, but an oracle tested less than asked (see above; a larger FUZZKV_BUDGET gives it time)." ;;
  *) result="**Result: ERROR** (exit $rc: interrupted or killed, e.g. a time-out): $(tail -n 1 "$out/run.log")" ;;
esac
files=()
for name in report.html junit.xml run.log replay.log; do
  [ ! -f "$out/$name" ] || files+=("$name")
done
printf '%s\n\nFiles in %s: %s.\n' "$result" "$out" "${files[*]:-none}" >> "$summary"
[ -z "${GITHUB_STEP_SUMMARY:-}" ] || cat "$summary" >> "$GITHUB_STEP_SUMMARY"
echo "nightly-fuzz: exit $rc"
exit "$rc"
