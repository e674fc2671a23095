"""The ``mtlzoo`` command: list, train, compare, evaluate, export, bound.

Exit codes: 0 success, 1 a run that failed, 2 bad input (recipe, arguments, run directory,
data, preset, request). Errors are one line on stderr: every ``MtlzooError`` carries its code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Importing anything under mtlzoo runs the package's __init__ (and so Keras) first anyway.
from mtlzoo.errors import MtlzooError, one_line
from mtlzoo.training.native_log import quiet_startup_log
from mtlzoo.training.strategies import STRATEGIES

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
SAMPLE_EXAMPLES = 4
WARMUP_EXAMPLES = 64


def _cmd_list(args) -> int:
    from mtlzoo.architectures import registry
    from mtlzoo.data import base as data_base

    if args.pretrained:
        from mtlzoo.presets import list_pretrained

        print("pretrained presets (mtlzoo.load(name)):")
        for name, card in list_pretrained().items():
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in card["mean_metrics"].items())
            print(f"  {name:<26} {card['recipe']['architecture']['name']} on {card['dataset']}/{card['split']}: "
                  f"mean {metrics}; {card['parameters']} parameters")
        return 0

    print("architectures:")
    for name in registry.list_models(args.pattern):
        print(f"  {name:<20} {registry.get_architecture(name).description}")
    print("datasets:")
    for name in data_base.list_datasets(args.pattern):
        print(f"  {name}")
    recipes = sorted(Path(args.configs).glob("*.yaml")) if Path(args.configs).is_dir() else []
    if recipes:
        print(f"recipes ({args.configs}):")
        for path in recipes:
            print(f"  {path}")
    return 0


def _cmd_train(args) -> int:
    from mtlzoo.recipes.config import load_recipe
    from mtlzoo.training import trainer

    recipe = load_recipe(args.config)
    trainer.train(
        recipe,
        args.out,
        strategy=args.strategy,
        epochs=args.epochs,
        resume=args.resume,
        overwrite=args.overwrite,
        verbose=args.verbose,
    )
    print(f"trained {recipe.name!r} into {args.out}")
    return 0


def _cmd_compare(args) -> int:
    from mtlzoo.evaluation import compare
    from mtlzoo.evaluation.report import summary_text
    from mtlzoo.recipes.config import load_recipe

    recipe = load_recipe(args.config)
    report = compare.compare(
        recipe,
        args.out,
        args.weightings,
        seeds=args.seeds,
        epochs=args.epochs,
        strategy=args.strategy,
        single_task=args.single_task,
        baselines=args.baselines,
        overwrite=args.overwrite,
        verbose=args.verbose,
        command=_compare_command(args),
    )
    print()
    print(summary_text(report))
    print(f"wrote {Path(args.out) / 'compare.json'}, compare.md and compare.png ({report['wall_seconds']:.0f} s)")
    return 0


def _compare_command(args) -> str:
    """The command line that reproduces this comparison (options in a fixed order)."""
    words = ["mtlzoo", "compare", args.config, "--weightings", args.weightings, "--seeds", str(args.seeds)]
    words += ["--out", str(args.out)]
    words += ["--epochs", str(args.epochs)] if args.epochs is not None else []
    words += ["--strategy", args.strategy] if args.strategy else []
    words += ["--single-task"] if args.single_task else []
    words += ["--baselines", args.baselines] if args.baselines else []
    return " ".join(words)


def _number(text: str, convert, low: float, high: float | None, what: str):
    """``text`` converted, or one argparse error saying what was expected."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low or (high is not None and value >= high) or value != value:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, int, 1, None, "an integer >= 1")


def _non_negative_int(text: str) -> int:
    return _number(text, int, 0, None, "an integer >= 0")


def _positive_float(text: str) -> float:
    return _number(text, float, 1e-300, float("inf"), "a finite number > 0")


def _probability(text: str) -> float:
    return _number(text, float, 1e-300, 1.0, "a number strictly between 0 and 1")


def _cmd_finetune(args) -> int:
    from mtlzoo import models, presets
    from mtlzoo.recipes.config import load_recipe
    from mtlzoo.training import trainer

    recipe = load_recipe(args.config)
    try:
        model = models.for_recipe(presets.load(args.preset), recipe, freeze_patterns=args.freeze,
                                    head_units=args.head_units)
    except ValueError as e:  # a --freeze pattern or task change that does not fit the preset
        raise argparse.ArgumentTypeError(str(e)) from None
    trainer.train(recipe, args.out, epochs=args.epochs, overwrite=args.overwrite, verbose=args.verbose,
                  start_from=model)
    print(f"fine-tuned {args.preset!r} on {recipe.name!r} into {args.out}")
    return 0


def _cmd_tune(args) -> int:
    from mtlzoo.recipes.config import load_recipe, dump_recipe
    from mtlzoo.recipes.tuning import tune

    recipe = load_recipe(args.config)
    if not recipe.tuning:
        raise argparse.ArgumentTypeError(f"{args.config} has no tuning section to search.")
    best, tuner = tune(recipe, args.trials_dir, overwrite=args.overwrite, verbose=args.verbose)
    dump_recipe(best, args.out)
    trial = tuner.oracle.get_best_trials(1)[0]
    print(f"best of {len(tuner.oracle.trials)} trials (score {trial.score:.4g}): {best.architecture} "
          f"{dict(best.params)}, learning rate {best.training.learning_rate:.3g}; written to {args.out}")
    return 0


def _cmd_preset(args) -> int:
    from mtlzoo.presets import save_preset
    from mtlzoo.recipes.config import load_recipe
    from mtlzoo.training.trainer import RECIPE_FILE

    baselines = _read_baselines(args.baselines) if args.baselines else None
    if args.split:
        _check_split(load_recipe(Path(args.run_dir) / RECIPE_FILE), args.split)
    path = save_preset(args.run_dir, args.preset_dir, split=args.split, baselines=baselines)
    print(f"saved preset {path} (load it with mtlzoo.load({str(path)!r}))")
    return 0


def _read_baselines(path: str) -> dict:
    try:
        baselines = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise argparse.ArgumentTypeError(f"--baselines {path!r} is not valid JSON: {e}") from None
    metrics = baselines.get("metrics") if isinstance(baselines, dict) else None
    if not isinstance(metrics, dict) or not all(isinstance(m, dict) for m in metrics.values()):
        raise argparse.ArgumentTypeError(
            f'--baselines {path!r}: expected {{"source": ..., "metrics": {{task: {{metric: value}}}}}}.')
    return baselines


def _check_split(recipe, split: str) -> None:
    splits = recipe.make_dataset().splits
    if split not in splits:
        raise argparse.ArgumentTypeError(f"--split {split!r}: dataset {recipe.dataset!r} has splits {list(splits)}.")


def _cmd_evaluate(args) -> int:
    from mtlzoo import evaluation, io
    from mtlzoo.training import trainer

    recipe, model = trainer.load_run(args.run_dir)
    split = args.split or recipe.evaluation_split
    _check_split(recipe, split)
    data = recipe.make_dataset().load_tasks(split, model.tasks)
    results, auxiliary = evaluation.by_role(evaluation.evaluate(model, data, batch_size=args.batch_size), model.tasks)
    report = {"split": split, "tasks": results, "mean": evaluation.mean_over_tasks(results)}
    if auxiliary:
        report["auxiliary"] = auxiliary
    io.write_json(Path(args.run_dir) / f"metrics_{split}.json", report)
    print(f"{recipe.name} on {recipe.dataset}/{split}:")
    print(evaluation.format_table(results, auxiliary))
    return 0


def _cmd_bound(args) -> int:
    from mtlzoo import io
    from mtlzoo.errors import RunDirError
    from mtlzoo.subspace import SubspaceColumns
    from mtlzoo.subspace.certify import certify, format_report
    from mtlzoo.training import trainer

    recipe, model = trainer.load_run(args.run_dir)
    if not any(isinstance(layer, SubspaceColumns) for layer in model.layers):
        raise RunDirError(f"{args.run_dir!r} holds a {recipe.architecture} model; `mtlzoo bound` needs a model of "
                          "the subspace architecture (its free parameters are what gets coded).")
    split = args.split or "test"
    _check_split(recipe, split)
    names = [t.name for t in model.tasks]
    dataset = recipe.make_dataset()
    report = certify(model, dataset.load_tasks("train", names), dataset.load_tasks(split, names),
                     levels=args.levels, epochs=args.epochs, delta=args.delta, learning_rate=args.learning_rate,
                     searched=args.searched)
    report["split"] = split
    out = Path(args.out) if args.out else Path(args.run_dir) / "bound.json"
    io.write_json(out, report)
    print(format_report(report))
    print(f"written to {out}")
    return 0


def _cmd_export(args) -> int:
    from mtlzoo import io
    from mtlzoo.serving.export import export_saved_model, served_model
    from mtlzoo.training import trainer

    recipe, model = trainer.load_run(args.run_dir)
    data = recipe.make_dataset().load_tasks(recipe.evaluation_split, model.tasks)
    # Real inputs for the warmup records, and a ready-made request (TF Serving REST body) with
    # the answer the trained model gives to it, so any client can check the export end to end.
    warmup = {k: v[:WARMUP_EXAMPLES] for k, v in data.inputs.items()}
    path = export_saved_model(model, args.export_base, args.version, overwrite=args.overwrite, warmup_inputs=warmup,
                              include_auxiliary=args.include_auxiliary)
    inputs = {k: v[:SAMPLE_EXAMPLES] for k, v in data.inputs.items()}
    expected = (model if args.include_auxiliary else served_model(model)).predict(inputs, verbose=0)
    run_dir = Path(args.run_dir)
    io.write_json(
        run_dir / "request.json",
        {
            "signature_name": "serving_default",
            "instances": [{k: v[i].tolist() for k, v in inputs.items()} for i in range(SAMPLE_EXAMPLES)],
        },
    )
    io.write_json(
        run_dir / "expected_response.json",
        {"predictions": [{t: expected[t][i].tolist() for t in expected} for i in range(SAMPLE_EXAMPLES)]},
    )
    print(f"exported {recipe.name!r} to {path}")
    print(f"sample request: {run_dir / 'request.json'} (expected answer: {run_dir / 'expected_response.json'})")
    return 0


def _cmd_predict(args) -> int:
    from mtlzoo import io
    from mtlzoo.serving.export import predict_exported, read_request, resolve_export_dir

    inputs, signature = read_request(args.input)
    outputs = predict_exported(args.export, inputs, args.signature or signature or "serving_default")
    response = {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    if args.output:
        io.write_json(args.output, response)
        print(f"answered {len(next(iter(inputs.values())))} examples from {resolve_export_dir(args.export)} "
              f"into {args.output}")
    else:
        print(json.dumps(response))
    return 0


def _cmd_serving_config(args) -> int:
    from mtlzoo.serving import server_config

    labels = dict(_parse_label(v) for v in args.label)
    path = server_config.write_model_config(
        args.export_root,
        args.out,
        base_path_prefix=args.base_path_prefix,
        version_policy=args.version_policy,
        num_versions=args.num_versions,
        versions=args.versions,
        labels=labels or None,
    )
    print(f"wrote {path}")
    return 0


def _version_list(text: str) -> list[int]:
    versions = [v.strip() for v in text.split(",")]
    if not all(v.isdigit() and int(v) >= 1 for v in versions):
        raise argparse.ArgumentTypeError(f"expected versions such as 1,2 (integers >= 1), got {text!r}")
    return [int(v) for v in versions]


def _parse_label(text: str) -> tuple[str, int]:
    label, _, version = text.partition("=")
    if not label or not version.isdigit():
        raise argparse.ArgumentTypeError(f"--label expects LABEL=VERSION (e.g. stable=2), got {text!r}")
    return label, int(version)


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (exit 2) instead of usage and error."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtlzoo", description="Multi-task model zoo for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="registered architectures, datasets and recipes")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'hard*'")
    p.add_argument("--configs", default="zoo_configs", help="folder of recipes to list")
    p.add_argument("--pretrained", action="store_true", help="list the shipped pretrained presets instead")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("finetune", help="fine-tune a preset on a recipe's data and tasks")
    p.add_argument("preset", help="a preset name, directory, gfile path or URL#sha256=...")
    p.add_argument("config", help="the recipe: its data, tasks and training settings (not its architecture)")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--freeze", action="append", default=[], metavar="PATTERN",
                   help="freeze the layers matching this glob, e.g. 'shared_*' (repeatable)")
    p.add_argument("--head-units", type=_positive_int, nargs="*", default=[], help="hidden widths of new task heads")
    p.add_argument("--epochs", type=_positive_int, default=None, help="overrides training.epochs")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("tune", help="keras-tuner search over a recipe's tuning section; writes the best recipe")
    p.add_argument("config")
    p.add_argument("--out", required=True, help="where to write the best recipe (YAML)")
    p.add_argument("--trials-dir", default="tuning", help="keras-tuner's folder of trials")
    p.add_argument("--overwrite", action="store_true", help="start the search afresh instead of resuming it")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("preset", help="save a trained run as a preset with its model card")
    p.add_argument("run_dir")
    p.add_argument("preset_dir")
    p.add_argument("--split", default=None, help="split the card's metrics are measured on (default: the recipe's)")
    p.add_argument("--baselines", default=None, metavar="JSON",
                   help='single-task results for the card\'s delta m: {"source": ..., "metrics": {task: {metric: v}}}')
    p.set_defaults(func=_cmd_preset)

    p = sub.add_parser("train", help="train a recipe into a run directory")
    p.add_argument("config", help="YAML recipe, e.g. zoo_configs/kang_hard_sharing.yaml")
    p.add_argument("--out", required=True, help="run directory to create (or resume)")
    p.add_argument("--strategy", choices=STRATEGIES, default=None, help="overrides training.strategy")
    p.add_argument("--epochs", type=_positive_int, default=None, help="overrides training.epochs")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="0 silent, 1 progress bar, 2 one line per epoch")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("compare", help="train a recipe with several weightings over seeds; tabulate metrics and Δm")
    p.add_argument("config", help="YAML recipe, e.g. zoo_configs/multimnist_hard_sharing.yaml")
    p.add_argument("--weightings", required=True,
                   help="comma-separated weighting names, e.g. unitary,uncertainty,pcgrad (see mtlzoo.weighting)")
    p.add_argument("--seeds", type=_positive_int, default=3, help="runs per weighting (seeds recipe seed + 0, 1, ...)")
    p.add_argument("--out", required=True, help="run directory to create: RUN_DIR/<weighting>/seed<i>/, compare.*")
    p.add_argument("--epochs", type=_positive_int, default=None, help="overrides training.epochs")
    p.add_argument("--strategy", choices=STRATEGIES, default=None, help="overrides training.strategy")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--single-task", action="store_true",
                      help="also train each task alone (same seeds) for the delta m baselines")
    base.add_argument("--baselines", default=None, metavar="JSON",
                      help="reuse single-task baselines {task: {metric: value}}, e.g. an earlier RUN_DIR/single_task.json")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier comparison in --out")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                   help="0 one line per run, 1 progress bars, 2 one line per epoch")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("evaluate", help="per-task metrics of a trained run")
    p.add_argument("run_dir")
    p.add_argument("--split", default=None, help="default: the recipe's evaluation.split")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("bound", help="quantise and code a subspace run; print its generalisation bound")
    p.add_argument("run_dir")
    p.add_argument("--levels", type=_positive_int, default=16, help="codebook size L (default 16)")
    p.add_argument("--epochs", type=_non_negative_int, default=3, help="quantisation-aware fine-tuning epochs (default 3)")
    p.add_argument("--learning-rate", type=_positive_float, default=1e-3)
    p.add_argument("--delta", type=_probability, default=0.05, help="the bound holds with probability 1 - delta")
    p.add_argument("--searched", type=_positive_int, default=1,
                   help="configurations bounded on this training data before picking this one (default 1); "
                        "the message pays log2 of it, so the bound survives the search")
    p.add_argument("--split", default=None, help="split to report the test error on (default: test)")
    p.add_argument("--out", default=None, help="default: RUN_DIR/bound.json")
    p.set_defaults(func=_cmd_bound)

    p = sub.add_parser("export", help="export a run as a TF Serving SavedModel version")
    p.add_argument("run_dir")
    p.add_argument("export_base", help="writes EXPORT_BASE/<version>/")
    p.add_argument("--version", type=_positive_int, default=None, help="default: next free version")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument("--include-auxiliary", action="store_true",
                   help="also serve the auxiliary and adversarial tasks (default: the main tasks only)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", help="answer inputs locally from an exported SavedModel")
    p.add_argument("--export", required=True, help="EXPORT_BASE (newest version) or a version directory")
    p.add_argument("--input", required=True, help="TF Serving REST body (.json: instances or inputs) or .npz")
    p.add_argument("--signature", default=None, help="default: the request's signature_name, else serving_default")
    p.add_argument("--output", default=None, help="write the answer here (JSON) instead of printing it")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("serving-config", help="write a TF Serving models.config for every export under a folder")
    p.add_argument("export_root", help="folder holding NAME/<version>/ exports, e.g. export/models")
    p.add_argument("--out", default="export/models.config")
    p.add_argument("--base-path-prefix", default=None,
                   help="model base paths as the server sees them, e.g. /models inside the container")
    p.add_argument("--version-policy", choices=("latest", "all", "specific"), default="latest")
    p.add_argument("--num-versions", type=_positive_int, default=1, help="with --version-policy latest")
    p.add_argument("--versions", type=_version_list, default=None, help="with --version-policy specific: e.g. 1,2")
    p.add_argument("--label", action="append", default=[], help="LABEL=VERSION (specific policy), repeatable")
    p.set_defaults(func=_cmd_serving_config)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with quiet_startup_log():  # the first op prints more of them (cuInit on a machine without a GPU)
            return args.func(args)
    except (argparse.ArgumentTypeError, OSError) as e:
        print(f"mtlzoo {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MtlzooError as e:
        kind = "error" if e.exit_code == EXIT_BAD_INPUT else "failed"
        print(f"mtlzoo {args.command}: {kind}: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"mtlzoo {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
