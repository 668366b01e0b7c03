"""Follow one training setting from the command line to the parameter update.

    python benchmarks/setting_walk.py [--checkout DIR]      (DIR: default this checkout)

Runs one tiny `rbmflow train` call (a random alignment of 11 sequences, 3 hidden units,
2 updates) through `rbmflow.cli.main` under `sys.settrace`, in a subprocess that imports the
package of DIR, and stops at the first line that applies the learning rate to the parameters
(a `.add_(..., alpha=...)` on the model's tensors). On the way it records the call stack
(the package's frames) at every line that reads the setting (`learning_rate`, `lr`,
`--learning-rate`), except while a module is being imported. The setting's walk goes from
each such stack to the next: up to their common frames, down into the next one. It prints:

- the walk's stops (each line that reads the setting, with its stack), and per module how
  many times the walk enters it: a call from a frame of another module into it (a module
  entered, left for another and entered again counts twice); the house rule wants every
  module entered at most twice;
- for context, all calls into the package's functions between `cli.main` and that line
  (module bodies, i.e. imports, left out): stops (runs of calls inside one module), modules
  and climbs back (stops in a module already visited before).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UPDATE_LINE = re.compile(r"\.add_\(.*alpha=")
SETTING_LINE = re.compile(r"learning[_-]rate|\blr\b(?![-_])|alpha=")


def module_of(filename: str, package: Path) -> str | None:
    """'training.train' for .../rbmflow/training/train.py; None outside the package."""
    try:
        relative = Path(filename).resolve().relative_to(package)
    except ValueError:
        return None
    return ".".join(relative.with_suffix("").parts)


def runs(modules: list[str]) -> list[str]:
    """Consecutive repeats collapsed: the stops of a walk."""
    return [m for i, m in enumerate(modules) if i == 0 or modules[i - 1] != m]


def trace(workdir: Path) -> dict[str, Any]:
    """Run the tiny train call under settrace; the stack and the walk (module names)."""
    import linecache

    import numpy as np
    import rbmflow
    from rbmflow.cli import main
    from rbmflow.data.dataset import EncodedAlignment, save_encoded

    package = Path(rbmflow.__file__).resolve().parent
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (11, 7)).astype(np.uint8)
    split = np.zeros(11, np.uint8)
    split[-3:] = 1
    save_encoded(workdir / "alignment.npz", EncodedAlignment(
        codes=codes, weights=np.ones(11, np.float32), split=split,
        names=np.array([f"s{i}" for i in range(11)]), columns=np.arange(7), alphabet="ACDE"))
    found: dict[str, Any] = {"stacks": []}
    calls: list[str] = []

    def stack_of(frame: Any) -> list[tuple[str, int]]:
        stack = []
        while frame is not None:
            name = module_of(frame.f_code.co_filename, package)
            if name is not None:
                stack.append((name, id(frame)))
            frame = frame.f_back
        return stack[::-1]

    def stack_codes(frame: Any) -> list[str]:
        names = []
        while frame is not None:
            if module_of(frame.f_code.co_filename, package) is not None:
                names.append(frame.f_code.co_name)
            frame = frame.f_back
        return names

    def tracer(frame, event, arg):  # noqa: ANN001, ANN202
        if "calls" in found:
            return None
        module = module_of(frame.f_code.co_filename, package)
        if module is None:
            return None
        if event == "call" and frame.f_code.co_name != "<module>":
            calls.append(module)
        if event == "line":
            text = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
            stack = stack_of(frame)
            importing = any(code == "<module>" for code in stack_codes(frame))
            if SETTING_LINE.search(text) and not importing:
                where = f"{module}:{frame.f_code.co_name}: {text.strip()[:60]}"
                found["stacks"].append((stack, where))
            if UPDATE_LINE.search(text):
                found["calls"] = list(calls)
                sys.settrace(None)
        return tracer

    argv = ["train", str(workdir / "alignment.npz"), "--out", str(workdir / "model.h5"),
            "--log", str(workdir / "train_log.csv"), "--hidden", "3", "--updates", "2",
            "--chains", "5", "--checkpoints", "2", "--learning-rate", "0.05"]
    sys.settrace(tracer)
    try:
        main(argv)
    finally:
        sys.settrace(None)
    return found


def setting_entries(stacks: list[list[tuple[str, int]]]) -> Counter[str]:
    """Per module, how many times the walk through `stacks` (lists of (module, frame id),
    outermost first) calls into it from another module."""
    entries: Counter[str] = Counter()
    previous: list[tuple[str, int]] = []
    for stack in stacks:
        common = 0
        while (common < min(len(stack), len(previous))
               and stack[common] == previous[common]):
            common += 1
        for depth in range(common, len(stack)):
            if depth == 0 or stack[depth - 1][0] != stack[depth][0]:
                entries[stack[depth][0]] += 1
        previous = stack
    return entries


def report(found: dict[str, Any]) -> None:
    print("the setting's stops:")
    for stack, where in found["stacks"]:
        print(f"  {' > '.join(runs([m for m, _ in stack]))}  [{where}]")
    entries = setting_entries([stack for stack, _ in found["stacks"]])
    print(f"the setting's walk: {len(found['stacks'])} stops; entries per module: "
          + json.dumps(dict(entries.most_common())))
    print(f"  most entries of one module: {max(entries.values())}")
    call_runs = runs(found["calls"])
    seen: set[str] = set()
    climbs = 0
    for module in call_runs:
        climbs += module in seen
        seen.add(module)
    print(f"all calls on the way: {len(call_runs)} stops in {len(seen)} modules, {climbs} "
          "climbs back")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="repository whose package is traced (default: this one)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        with tempfile.TemporaryDirectory() as tmp:
            found = trace(Path(tmp))
        if "calls" not in found:
            print("the update line was never reached", file=sys.stderr)
            return 1
        report(found)
        return 0
    env = dict(os.environ, PYTHONPATH=str(args.checkout.resolve() / "workflow"),
               OMP_NUM_THREADS="1")
    print(f"package of {args.checkout.resolve()}")
    return subprocess.run([sys.executable, __file__, "--inner"], env=env, check=False
                          ).returncode


if __name__ == "__main__":
    sys.exit(main())
