"""The evaluation commands: `report`, `compare`, `score` and `baselines`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from coordinator.cli.common import (
    ColumnsOption,
    DataDirOption,
    ItemsCsvOption,
    NFoldsOption,
    RatingsCsvOption,
    UsersCsvOption,
    app,
    choose_dataset,
    console,
    err_console,
    fold_names,
    guard,
    settings_or_fail,
)
from lusifer.core.errors import ConfigurationError, DataError

if TYPE_CHECKING:
    # The evaluation pulls in scipy, matplotlib and scikit-surprise: imported by the commands
    # that need them, so `lusifer run`, `worker` and `status` start as fast as before.
    from coordinator.evaluate import EvalOptions, Report
    from lusifer.core.settings import Settings
    from lusifer.data import Dataset

BASELINES_HELP = (
    "Baselines: all (default), fast (no KNN, no SVD++), none, or a list of "
    "global_mean,baseline_only,knn_baseline,svd,svdpp,nmf,als"
)
FOLDS_HELP = "Comma-separated folds (default u1..u5, or f1..fN of own data)"
JsonOption = Annotated[
    Path | None, typer.Option("--json", help="Write every number to this JSON file")
]
HtmlOption = Annotated[
    Path | None, typer.Option("--html", help="Write one self-contained HTML page with plots")
]
ColdKOption = Annotated[int, typer.Option(help="Cold start: users with fewer training ratings")]
ResamplesOption = Annotated[int, typer.Option(help="Bootstrap resamples (of users)")]
SeedOption = Annotated[int, typer.Option(help="Seed of the baselines and the bootstrap")]


def _eval_options(methods: str | None, cold_k: int, resamples: int, seed: int) -> EvalOptions:
    from coordinator.evaluate import EvalOptions
    from lusifer.evaluate.baselines import parse_methods

    if cold_k < 1 or resamples < 1:
        raise ConfigurationError("--cold-k and --resamples must be at least 1")
    return EvalOptions(parse_methods(methods), cold_k=cold_k, n_resamples=resamples, seed=seed)


def _load(
    settings: Settings,
    folds: str | None,
    data_dir: Path | None,
    ratings_csv: Path | None,
    items_csv: Path | None,
    users_csv: Path | None,
    columns: str | None,
    n_folds: int,
) -> tuple[Dataset, tuple[str, ...]]:
    """MovieLens 100K or own CSV files (as `lusifer run` takes them) and the folds to score."""
    from coordinator.datasets import load_dataset_spec

    spec, default = choose_dataset(
        settings,
        data_dir=data_dir,
        overviews=None,  # baselines and scores use ratings only
        ratings_csv=ratings_csv,
        items_csv=items_csv,
        users_csv=users_csv,
        columns=columns,
        n_folds=n_folds,
    )
    names = fold_names(folds, default)
    dataset = load_dataset_spec(spec, names)
    unknown = [name for name in names if name not in dataset.folds]
    if unknown:
        raise DataError(
            f"unknown folds {', '.join(unknown)}: choose from {', '.join(sorted(dataset.folds))}"
        )
    return dataset, names


def _emit(result: Report, json_file: Path | None, html: Path | None) -> None:
    """Print the evaluation tables and write the requested files."""
    from coordinator.report.as_json import write_json
    from coordinator.report.eval_tables import print_evaluation
    from coordinator.report.html_page import write_html

    print_evaluation(console, result)
    if json_file is not None:
        write_json(result, json_file)
        console.print(f"wrote {json_file}", highlight=False)
    if html is not None:
        write_html(result, html)
        console.print(f"wrote {html}", highlight=False)


@app.command()
def report(
    run_id: str,
    json_file: JsonOption = None,
    html: HtmlOption = None,
    baselines: Annotated[str | None, typer.Option(help=BASELINES_HELP)] = None,
    cold_k: ColdKOption = 20,
    resamples: ResamplesOption = 1000,
    seed: SeedOption = 0,
) -> None:
    """Print the metrics tables of a run again from the database.

    With --json, --html or --baselines: also every baseline on the same ratings, the
    cold-start slice, fidelity and the bootstrap interval.
    """

    def action() -> None:
        from coordinator.runner import report_run

        settings = settings_or_fail()
        report_run(run_id, settings, console)
        if json_file is not None or html is not None or baselines is not None:
            from coordinator.evaluate import evaluate_run

            options = _eval_options(baselines, cold_k, resamples, seed)
            _emit(evaluate_run(run_id, settings, options, err_console), json_file, html)

    guard(action)


@app.command()
def compare(
    run_a: str,
    run_b: str,
    json_file: JsonOption = None,
    html: HtmlOption = None,
    baselines: Annotated[str, typer.Option(help=BASELINES_HELP)] = "all",
    resamples: ResamplesOption = 1000,
    seed: SeedOption = 0,
) -> None:
    """Two runs side by side, and their paired difference on the ratings both answered,
    with every baseline on those same ratings."""

    def action() -> None:
        from coordinator.report.compare import compare_runs, print_comparison, write_comparison

        options = _eval_options(baselines, 20, resamples, seed)
        result = compare_runs(run_a, run_b, settings_or_fail(), options, err_console)
        print_comparison(console, result)
        write_comparison(result, html, json_file)
        for path in (json_file, html):
            if path is not None:
                console.print(f"wrote {path}", highlight=False)

    guard(action)


@app.command()
def score(
    csv_file: Annotated[
        Path, typer.Argument(help="CSV: user_id,item_id,rating (or simulated_rating)[,fold]")
    ],
    folds: Annotated[str | None, typer.Option(help=FOLDS_HELP)] = None,
    data_dir: DataDirOption = None,
    ratings_csv: RatingsCsvOption = None,
    items_csv: ItemsCsvOption = None,
    users_csv: UsersCsvOption = None,
    columns: ColumnsOption = None,
    n_folds: NFoldsOption = 5,
    json_file: JsonOption = None,
    html: HtmlOption = None,
    baselines: Annotated[str, typer.Option(help=BASELINES_HELP)] = "all",
    cold_k: ColdKOption = 20,
    resamples: ResamplesOption = 1000,
    seed: SeedOption = 0,
) -> None:
    """Score simulated ratings made elsewhere against the real test ratings, with baselines."""

    def action() -> None:
        from coordinator.evaluate import evaluate_csv

        if not csv_file.is_file():
            raise DataError(f"cannot read {csv_file}: no such file; check the path")
        settings = settings_or_fail()
        options = _eval_options(baselines, cold_k, resamples, seed)
        own = (ratings_csv, items_csv, users_csv, columns, n_folds)
        dataset, names = _load(settings, folds, data_dir, *own)
        result = evaluate_csv(csv_file, dataset, names, options, settings, err_console)
        _emit(result, json_file, html)

    guard(action)


@app.command("baselines")
def baselines_command(
    folds: Annotated[str | None, typer.Option(help=FOLDS_HELP)] = None,
    methods: Annotated[str, typer.Option(help=BASELINES_HELP)] = "all",
    data_dir: DataDirOption = None,
    ratings_csv: RatingsCsvOption = None,
    items_csv: ItemsCsvOption = None,
    users_csv: UsersCsvOption = None,
    columns: ColumnsOption = None,
    n_folds: NFoldsOption = 5,
    json_file: JsonOption = None,
    html: HtmlOption = None,
    cold_k: ColdKOption = 20,
    seed: SeedOption = 0,
) -> None:
    """Every baseline on the whole test set of each fold, continuous and rounded to 1..5.

    With LUSIFER_BROKER_URL and LUSIFER_DATABASE_URL set, the workers fit them.
    """

    def action() -> None:
        from coordinator.evaluate import evaluate_baselines

        settings = settings_or_fail()
        options = _eval_options(methods, cold_k, 1, seed)
        if not options.methods:
            raise ConfigurationError("--methods none leaves nothing to compute")
        own = (ratings_csv, items_csv, users_csv, columns, n_folds)
        dataset, names = _load(settings, folds, data_dir, *own)
        _emit(evaluate_baselines(dataset, names, options, settings, err_console), json_file, html)

    guard(action)
