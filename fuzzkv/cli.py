"""The ``fuzzkv`` command line: parses options and delegates to :mod:`fuzzkv.app`."""

from __future__ import annotations

import sys

import click

from fuzzkv import app
from fuzzkv._version import __version__
from fuzzkv.config import SCALES, SETTINGS, RunConfig, default_db_url
from fuzzkv.errors import EXIT_INTERNAL, FuzzkvError


def setting_option(name: str):
    """The click option of RunConfig's setting ``name``: flag, type, choices, default and help as its field declares
    them (:class:`fuzzkv.config.Setting`). The store's (``--db``) defaults to None here: ``$FUZZKV_DB`` is read
    when a command runs."""
    setting = SETTINGS[name]
    assert setting.flag is not None, f"{name} is a setting of the Python API only"
    declarations = [setting.flag, *([setting.short] if setting.short else []), name]
    if setting.kind is bool:
        return click.option(*declarations, is_flag=True, default=setting.default, help=setting.help_text() or None)
    return click.option(*declarations, type=click.Choice(setting.choices) if setting.choices else setting.kind,
                        default=setting.default, required=setting.required, multiple=setting.many,
                        show_default=setting.default not in (None, ()), help=setting.help_text() or None)


def setting_options(*names: str):
    """The options of RunConfig's settings ``names``, in that order (the order --help lists them in)."""
    def decorate(command):
        for name in reversed(names):
            command = setting_option(name)(command)
        return command
    return decorate


db_option = setting_option("db_url")
# Options that choose and build the model under test (shared by run and calibrate).
model_options = setting_options("model", "backend", "scale", "dtype", "device", "attn", "init_std", "trust_remote_code")
# The rest of run's settings (tests/unit/test_settings.py checks that run has an option for every setting with a flag).
search_options = setting_options("oracles", "seed", "max_examples", "max_time", "deadline", "db_url", "tolerance",
                                 "max_batch", "max_prompt_len", "max_new_tokens")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fuzzkv")
def cli() -> None:
    """Fuzz a language model's KV cache: cached outputs must equal uncached ones."""


@cli.command()
@model_options
@search_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Also write JUnit XML (one test case per oracle).")
@click.option("--report", type=click.Path(dir_okay=False), help="Also write the HTML report of MODEL's stored "
              "failures and runs at the end (see 'fuzzkv report').")
@click.option("--summary", type=click.Path(dir_okay=False), help="Append a Markdown summary (new, re-opened and "
              "known failures), e.g. to $GITHUB_STEP_SUMMARY.")
@click.option("--fail-on", default="any", show_default=True, type=click.Choice(app.FAIL_ON),
              help="any: exit 1 on any failure; new: only on failures new to --db or re-opened after a fix.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes fuzzing MODEL at once (seeds SEED..SEED+N-1), each with its own model copy, "
                   "into one shared --db.")
@click.option("--repro-dir", type=click.Path(file_okay=False),
              help="Folder the failures' reproduction scripts are saved in [default: fuzzkv-repro beside the --db "
                   "file, else in the current folder].")
@click.option("--quiet", "-q", is_flag=True, help="Print only one line per root cause and the final verdict.")
@click.option("--verbose", "-v", is_flag=True, help="Also print each failure's case JSON, where it breaks and script path.")
def run(as_json: bool, db_url: str | None, junit: str | None, report: str | None, summary: str | None, fail_on: str,
        workers: int, repro_dir: str | None, quiet: bool, verbose: bool, **options) -> None:
    """Fuzz MODEL: find, shrink and store KV-cache failures. Exit 0 clean, 1 failures, 2 bad usage, 3 internal
    error, 4 blind (no failure, but planted canary bugs went unseen: not clean), 5 nothing tested (every oracle
    skipped or its backend unsupported), 6 incomplete (no failure, but an oracle tested less than asked:
    --max-time ran out before 20 examples, every case was refused, or one asked for by name did not apply),
    130 interrupted. Failures are printed grouped by root cause (one bug seen by several oracles is one), each
    with the path of its saved reproduction script."""
    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose contradict each other.")
    outputs = app.RunOutputs(as_json=as_json, junit=junit, report=report, summary=summary, fail_on=fail_on,
                             workers=workers, repro_dir=repro_dir, verbosity=-1 if quiet else 1 if verbose else 0)
    _guarded(lambda: app.run_command(RunConfig(db_url=db_url or default_db_url(), **options), outputs))


@cli.command()
@click.option("--model", "-m", help="Only this model's failures.")
@click.option("--status", default="open", show_default=True, type=click.Choice(app.STATUS_CHOICES))
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def failures(model: str | None, status: str, db_url: str | None, as_json: bool) -> None:
    """List stored failures."""
    _guarded(lambda: app.failures_command(db_url or default_db_url(), model=model, status=status, as_json=as_json))


@cli.command()
@click.argument("failure_id", type=int)
@db_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--script", "script_only", is_flag=True,
              help="Print only the reproduction script (e.g. 'fuzzkv show 1 --script > repro.py').")
def show(failure_id: int, db_url: str | None, as_json: bool, script_only: bool) -> None:
    """Show one stored failure (its root cause's key, where it breaks) and its standalone reproduction script."""
    _guarded(lambda: app.show_command(db_url or default_db_url(), failure_id, as_json=as_json, script_only=script_only))


@cli.command()
@click.option("--model", "-m", help="Only this model's failures.")
@db_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--fail-on", default="any", show_default=True, type=click.Choice(app.FAIL_ON),
              help="any: exit 1 if any open failure still fails; new: also replay fixed failures, and exit 1 only "
                   "if one of those fails again (a pull-request gate that known open bugs do not block).")
@click.option("--deadline", type=float, default=None,
              help="Seconds one stored case may take before it counts as a hang (a failure) [default: the deadline "
                   "of the run that stored it].")
@click.option("--trust-remote-code", is_flag=True,
              help="Run the model code a stored failure's model folder ships (its config.json's auto_map), with "
                   "your permissions; without it such failures are skipped, whatever the run was given.")
def replay(model: str | None, db_url: str | None, as_json: bool, fail_on: str, deadline: float | None,
           trust_remote_code: bool) -> None:
    """Re-run every open stored failure (no Hypothesis). Marks passing ones fixed; exit 1 if any still fails."""
    _guarded(lambda: app.replay_command(db_url or default_db_url(), model=model, as_json=as_json, fail_on=fail_on,
                                        deadline=deadline, trust_remote_code=trust_remote_code))


@cli.command()
@db_option
@click.option("--out", default="reports/index.html", show_default=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (one self-contained file: open it from disk or keep it as a CI artifact).")
@click.option("--model", "-m", help="Only this model's failures and runs.")
@click.option("--run", "run_id", type=int, help="Only the failures first found by this run id.")
def report(db_url: str | None, out: str, model: str | None, run_id: int | None) -> None:
    """Write the HTML report: failures with their minimal cases, charts of where each breaks, and run history."""
    _guarded(lambda: app.report_command(db_url or default_db_url(), out, model=model, run_id=run_id))


@cli.command()
@model_options
@db_option
def calibrate(db_url: str | None, **options) -> None:
    """Measure and store MODEL's tolerance baseline; exit 1 if noise grew past the limit since other versions."""
    _guarded(lambda: app.calibrate_command(RunConfig(db_url=db_url or default_db_url(), **options)))


@cli.command()
@click.option("--models", default="all", show_default=True,
              help="all (every registry name and every other fuzzed model type of the installed transformers: "
                   "decoder-only, encoder-decoder, vision-language), NAME,NAME,... or @FILE (one name per line).")
@click.option("--scale", default="tiny", show_default=True, type=click.Choice(SCALES))
@click.option("--oracle", "oracles", multiple=True, help="Oracles to run (repeatable) [default: every transformers one].")
@click.option("--max-examples", default=25, show_default=True, type=int, help="Examples per oracle and architecture.")
@click.option("--max-time-per-model", default=300.0, show_default=True, type=float,
              help="Seconds of search per architecture; a worker still running long past it is killed (a hang).")
@click.option("--shard", default="1/1", show_default=True,
              help="I/N: sweep only the I-th of N deterministic parts (a CI matrix covers each architecture once).")
@click.option("--workers", default=1, show_default=True, type=int, help="Architectures fuzzed at once, each in its own process.")
@click.option("--seed", default=0, show_default=True, type=int)
@setting_option("dtype")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the matrix as one JSON object (progress goes to stderr).")
@click.option("--report", type=click.Path(dir_okay=False), help="Also write the HTML report (the matrix first).")
@click.option("--campaign", type=click.Path(dir_okay=False),
              help="A campaign TOML file: models x dtypes x devices x backends and budgets (overrides --models, "
                   "--dtype and the budgets). Tasks whose results are stored for the same versions are skipped.")
@click.option("--executor", default="local", show_default=True, type=click.Choice(("local", "ray")),
              help="local: --workers processes here; ray: one Ray task per architecture and settings "
                   "(pip install 'fuzzkv[ray]').")
@click.option("--address", help="With --executor ray: the Ray cluster to join (default: start a local one).")
def sweep(models: str, oracles: tuple[str, ...], shard: str, db_url: str | None, as_json: bool, report: str | None,
          campaign: str | None, executor: str, address: str | None, **options) -> None:
    """Fuzz many architectures, each in its own process, into one database; print the architecture x oracle
    matrix. Exit 0 clean, 1 a finding (or a crash or hang), 2 bad usage, 4 blind."""
    settings = dict(options, oracles=oracles, shard=shard, db_url=db_url or default_db_url())
    _guarded(lambda: app.sweep_command(settings, models, as_json=as_json, report=report, campaign=campaign,
                                       executor=executor, address=address, db_given=db_url is not None))


@cli.command()
@click.option("--all", "every", is_flag=True,
              help="Every generative model type of the installed transformers (causal-LM, image-text-to-text, "
                   "multimodal-LM, seq2seq, speech-seq2seq mappings): curated or generic, its cache features, "
                   "and whether its tiny twin builds here (builds each one: a few minutes).")
@click.option("--json", "as_json", is_flag=True, help="With --all: a JSON list of objects.")
def models(every: bool, as_json: bool) -> None:
    """List the bundled architectures and the cache features each exercises."""
    if as_json and not every:
        raise click.UsageError("--json needs --all.")
    if every:
        _guarded(lambda: app.all_models_command(as_json))
    click.echo(app.models_table())


def _guarded(action) -> None:
    """Run a command: one clear line for known errors (exit 2), a short report for our bugs (exit 3)."""
    try:
        code = action()
    except FuzzkvError as exc:
        click.echo(f"Error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - an internal error: say so, exit 3
        click.echo(f"Internal error: {type(exc).__name__}: {exc}. Tip: please report this with the command you ran.",
                   err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code)


def main() -> None:
    """The console entry point: click's usage errors become one line and exit 2, like every other bad input."""
    try:
        code = cli.main(prog_name="fuzzkv", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.ClickException as exc:
        command = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else "fuzzkv"
        click.echo(f"Error: {exc.format_message()} Tip: '{command} --help' lists the options.", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code or 0)
