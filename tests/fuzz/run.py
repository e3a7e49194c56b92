"""Run one fuzz harness under atheris (coverage-guided, libFuzzer).

    python -m tests.fuzz.run NAME [--corpus DIR] [--artifacts DIR] [LIBFUZZER FLAGS...]

Seeds (tests/fuzz/seeds.py, the shared corpora's cases when present) are
written to a seed directory first; new inputs the fuzzer keeps go to
``--corpus`` (a temporary directory without it). A finding (an undeclared
error, an input over ``harnesses.MAX_SECONDS``, the process over
``harnesses.MAX_RSS``) stops the run with the input saved under
``--artifacts`` and a non-zero exit. libFuzzer's own limits back those up:
``-timeout`` and ``-rss_limit_mb`` are set unless given. Bound a run with
``-runs=N`` or ``-max_total_time=S``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[2]


def _corpora() -> Path | None:
    from tests.conftest import CORPORA
    return CORPORA if CORPORA.is_dir() else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run")
    parser.add_argument("name")
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--artifacts", type=Path)
    args, libfuzzer = parser.parse_known_args(argv)
    with atheris.instrument_imports(include=["hostlog"]):
        from tests.fuzz.harnesses import HARNESSES, MAX_RSS, MAX_SECONDS, run_one
        from tests.fuzz.seeds import seeds
    harness = HARNESSES[args.name]
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{args.name}-"))
    seed_dir = work / "seeds"
    seed_dir.mkdir()
    for data in seeds(args.name, _corpora()):
        (seed_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)
    corpus = args.corpus or work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = args.artifacts or work
    artifacts.mkdir(parents=True, exist_ok=True)
    flags = list(libfuzzer)
    if not any(f.startswith("-timeout=") for f in flags):
        flags.append(f"-timeout={int(MAX_SECONDS) + 1}")
    if not any(f.startswith("-rss_limit_mb=") for f in flags):
        flags.append(f"-rss_limit_mb={(MAX_RSS >> 20) + 512}")
    flags += [f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]

    def one_input(data: bytes) -> None:
        run_one(harness, data)

    atheris.Setup([sys.argv[0], *flags, str(corpus), str(seed_dir)], one_input)
    atheris.Fuzz()
    return 0  # (atheris.Fuzz exits the process itself)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
