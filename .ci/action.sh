#!/usr/bin/env bash
# What the reusable GitHub Action (action.yml at the repository root) runs: the nightly fuzz job for each of
# several models, or the pull-request replay gate, through the two scripts beside it. tests/test_action.py runs
# it for real.
#
#   fuzz:   for each model in FUZZKV_MODELS, .ci/nightly-fuzz.sh with its own database fuzzkv-db/<id>.db and
#           output directory fuzzkv-out/<id> (id: the model with every character outside [A-Za-z0-9._-] made
#           '-', then '-' and the scale). A new or re-opened failure in any model fails the step.
#   replay: .ci/pr-replay.sh on every database in fuzzkv-db.
#
# Exit code: the worst of the models' (0 clean or only known failures, 1 new or re-opened failures, 2 bad
# input, 3 internal error).
#
# Inputs (environment variables; the action sets them from its inputs):
#   FUZZKV_MODE      fuzz | replay                                             [fuzz]
#   FUZZKV_MODELS    fuzz: comma-separated --model values                      (required for fuzz)
#   FUZZKV_SCALE     tiny | full                                               [full]
#   FUZZKV_DB_DIR    directory of the databases kept between runs             [fuzzkv-db]
#   FUZZKV_OUT_DIR   directory of each model's report, JUnit XML, summary     [fuzzkv-out]
#   FUZZKV_BUDGET, FUZZKV_SEED, FUZZKV_MAX_EXAMPLES, FUZZKV_ARGS: as .ci/nightly-fuzz.sh reads them
#   FUZZKV_FAIL_ON   replay: new | any, as .ci/pr-replay.sh reads it
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mode=${FUZZKV_MODE:-fuzz}
db_dir=${FUZZKV_DB_DIR:-fuzzkv-db}
out_dir=${FUZZKV_OUT_DIR:-fuzzkv-out}
scale=${FUZZKV_SCALE:-full}  # the CLI's and action.yml's default

case "$mode" in
  replay)
    FUZZKV_DB_DIR=$db_dir FUZZKV_OUT="$out_dir/replay" bash "$here/pr-replay.sh"
    exit $?
    ;;
  fuzz) ;;
  *) echo "Error: mode must be fuzz or replay, got '$mode'. Tip: set the action's 'mode' input." >&2; exit 2 ;;
esac

IFS=',' read -r -a models <<< "${FUZZKV_MODELS:-}"
worst=0
count=0
for model in "${models[@]}"; do
  model=$(echo "$model" | xargs)  # spaces around a comma are not part of the name
  [ -n "$model" ] || continue
  count=$((count + 1))
  id="$(echo "$model" | tr -c 'A-Za-z0-9._\n-' '-')-$scale"
  echo "--- fuzzkv: $model ($scale) -> $db_dir/$id.db ---"
  FUZZKV_MODEL=$model FUZZKV_SCALE=$scale FUZZKV_DB="$db_dir/$id.db" FUZZKV_OUT="$out_dir/$id" \
    bash "$here/nightly-fuzz.sh"
  code=$?
  # Bad input or an internal error outranks findings: the run did not do what was asked.
  if [ "$code" -gt "$worst" ]; then worst=$code; fi
done
if [ "$count" -eq 0 ]; then
  echo "Error: no model to fuzz. Tip: set the action's 'models' input, e.g. 'bloom-560m, my_pkg.models:tiny'." >&2
  exit 2
fi
exit "$worst"
