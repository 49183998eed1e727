"""The `scalesim` command: serve, doctor, demo, and setup helpers (models, adapters, patches)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scalesim import paths


def _cmd_serve(argv: list[str]) -> int:
    from scalesim.engine.sglang.launch import ServeError, serve

    try:
        return serve(argv)
    except ServeError as exc:
        print(f"scalesim serve: error: {exc}", file=sys.stderr)
        return 2


def _cmd_doctor(_: argparse.Namespace) -> int:
    from scalesim.engine.sglang.doctor import report

    return report()


def _cmd_demo(args: argparse.Namespace) -> int:
    from scalesim.demo import run_demo

    return run_demo(args.agents, args.steps, args.active, args.seed, args.port, args.max_tokens, Path(args.log))


def _cmd_bench(args: argparse.Namespace) -> int:
    from scalesim.bench import core

    core.run(n_agents=args.agents, victims=args.victims, repeats=args.repeats)
    return 0


def _cmd_bench_tree_core(args: argparse.Namespace) -> int:
    from scalesim.bench import tree_core

    return tree_core.main(args.agents, args.steps, args.active, args.prefix, args.seed, args.port, args.reverse)


def _cmd_bench_sim(args: argparse.Namespace) -> int:
    from scalesim.bench.sim import Bench, RunConfig
    from scalesim.bench.systems import select
    from scalesim.bench.workloads import WorkloadParams

    model = {"default": paths.default_model_path(), "tiny": paths.tiny_model_path()}.get(args.model, Path(args.model))
    try:
        config = RunConfig(
            params=WorkloadParams(agents=args.agents, active=args.active, resident=args.resident, steps=args.steps,
                                  seed=args.seed, prefix_tokens=tuple(args.prefix_tokens),
                                  output_tokens=args.output_tokens),
            workloads=tuple(w.strip() for w in args.workloads.split(",") if w.strip()),
            systems=tuple(select(args.systems)), model=model, out=Path(args.out), adapters=not args.no_adapters,
            trace=Path(args.trace) if args.trace else None, port=args.port, extra_args=tuple(args.serve_arg),
            repeats=args.repeats, kv_tokens=args.kv_tokens)
        bench = Bench(config)
    except ValueError as exc:
        print(f"scalesim bench sim: error: {exc}", file=sys.stderr)
        return 2
    results = bench.run()
    from scalesim.bench.report import markdown

    print(markdown(results).split("\n## ")[0])
    print(f"results: {config.out}/results.json, results.md, makespan.png")
    return 0


def _cmd_bench_report(args: argparse.Namespace) -> int:
    from scalesim.bench.report import markdown
    from scalesim.bench.sim import rescore

    print(markdown(rescore(Path(args.out))).split("\n## ")[0])
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from scalesim.models import smollm2, tiny

    if args.which in ("default", "all"):
        print(f"default model: {smollm2.build(paths.default_model_path())}")
    if args.which in ("tiny", "all"):
        print(f"tiny model: {tiny.build(paths.tiny_model_path())}")
    return 0


def _cmd_adapters(args: argparse.Namespace) -> int:
    from scalesim.models.adapters import make_adapters

    made = make_adapters(Path(args.model), Path(args.out), args.count, rank=args.rank, seed=args.seed)
    print(f"{len(made)} adapters in {args.out}")
    return 0


def _cmd_patches(args: argparse.Namespace) -> int:
    from scalesim.engine.sglang import patches

    try:
        result = patches.apply_all() if args.action == "apply" else patches.statuses()
    except patches.PatchError as exc:
        print(f"scalesim patches: error: {exc}", file=sys.stderr)
        return 1
    for s in result:
        print(f"{s.name}: {s.state.value}")
    return 0 if all(s.state is patches.PatchState.APPLIED for s in result) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scalesim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the server; SGLang arguments pass through, ScaleSim's start with --scalesim-",
                   add_help=False)
    sub.add_parser("doctor", help="print versions, device, patches, models and plugin status").set_defaults(fn=_cmd_doctor)

    demo = sub.add_parser("demo", help="start a server and run a short multi-agent simulation")
    demo.add_argument("--agents", type=int, default=20)
    demo.add_argument("--steps", type=int, default=3)
    demo.add_argument("--active", type=float, default=0.25, help="share of agents active per step")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--port", type=int, default=30123)
    demo.add_argument("--max-tokens", type=int, default=24)
    demo.add_argument("--log", default=str(paths.cache_root() / "demo-server.log"))
    demo.set_defaults(fn=_cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    bench_sub = bench.add_subparsers(dest="suite", required=True)
    core = bench_sub.add_parser("core", help="distance table and eviction policy cost per operation")
    core.add_argument("--agents", type=int, default=10_000)
    core.add_argument("--victims", type=int, default=1_000)
    core.add_argument("--repeats", type=int, default=7)
    core.set_defaults(fn=_cmd_bench)
    tree = bench_sub.add_parser("tree-core", help="SGLang's Python radix-tree core (needed by the scalesim "
                                "policy) against its Rust core, on a live server")
    tree.add_argument("--agents", type=int, default=30)
    tree.add_argument("--steps", type=int, default=20)
    tree.add_argument("--active", type=float, default=0.2)
    tree.add_argument("--prefix", type=int, default=300, help="tokens of each agent's private prefix")
    tree.add_argument("--seed", type=int, default=0)
    tree.add_argument("--port", type=int, default=30124)
    tree.add_argument("--reverse", action="store_true", help="run the configurations in reverse order")
    tree.set_defaults(fn=_cmd_bench_tree_core)
    sim = bench_sub.add_parser("sim", help="simulation workloads against stock SGLang, ScaleSim, the unlimited-memory "
                               "bound and the oracle, one server after another (JSON, Markdown, plot)")
    sim.add_argument("--workloads", default="plan_town,spatial_town,social_network,debate,replay",
                     help="comma-separated: plan_town, spatial_town, social_network, debate, replay")
    sim.add_argument("--systems", default="all", help="'all' or a comma-separated list (see docs/bench.md)")
    sim.add_argument("--agents", type=int, default=200)
    sim.add_argument("--active", type=float, default=0.2, help="share of agents calling per step")
    sim.add_argument("--resident", type=float, default=0.25, help="share of agents' state the memory budget holds")
    sim.add_argument("--steps", type=int, default=30)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--prefix-tokens", type=int, nargs=2, default=[1000, 2000], metavar=("MIN", "MAX"))
    sim.add_argument("--output-tokens", type=int, default=32)
    sim.add_argument("--model", default="default", help="'default', 'tiny' or a model directory")
    sim.add_argument("--no-adapters", action="store_true", help="no per-agent LoRA adapters")
    sim.add_argument("--trace", help="trace file for the replay workload (default: this run's plan_town trace)")
    sim.add_argument("--out", default="bench-results")
    sim.add_argument("--port", type=int, default=31000)
    sim.add_argument("--serve-arg", action="append", default=[], help="extra argument for every server (repeat)")
    sim.add_argument("--kv-tokens", type=int, default=None,
                     help="device KV pool in tokens instead of the one --resident gives (one budget across runs "
                          "of different workloads; the default depends on the largest prefixes of those run)")
    sim.add_argument("--repeats", type=int, default=1,
                     help="rounds over every system (alternating order); figures of the median round per system")
    sim.set_defaults(fn=_cmd_bench_sim)
    rep = bench_sub.add_parser("report", help="recompute the headline, table and plot of a finished `bench sim` run")
    rep.add_argument("--out", default="bench-results")
    rep.set_defaults(fn=_cmd_bench_report)

    models = sub.add_parser("models", help="build the embedded models into the cache (idempotent)")
    models.add_argument("which", choices=["default", "tiny", "all"], nargs="?", default="all")
    models.set_defaults(fn=_cmd_models)

    adapters = sub.add_parser("adapters", help="make N distinct seeded LoRA adapters for a model")
    adapters.add_argument("--model", default=str(paths.default_model_path()))
    adapters.add_argument("--out", required=True)
    adapters.add_argument("--count", type=int, required=True)
    adapters.add_argument("--rank", type=int, default=8)
    adapters.add_argument("--seed", type=int, default=0)
    adapters.set_defaults(fn=_cmd_adapters)

    patch = sub.add_parser("patches", help="apply or check ScaleSim's patches to the installed SGLang")
    patch.add_argument("action", choices=["apply", "status"])
    patch.set_defaults(fn=_cmd_patches)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `serve` hands every argument to SGLang, so it bypasses argparse here.
    if argv[:1] == ["serve"]:
        return _cmd_serve(argv[1:])
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
