"""Benchmarks: each prints ratios against baselines measured in the same run (see PERFORMANCE.md)."""

from pathlib import Path


def precompile_project() -> None:
    """Write the project's .pyc files, as installing a wheel does, before timing fresh processes.

    With PYTHONDONTWRITEBYTECODE=1 (CI machines often set it) an editable checkout is compiled again by every
    process, about 0.1 s each, which a deployed wheel never pays.
    """
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "adu_assets"), quiet=1)
