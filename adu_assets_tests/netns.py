"""Run a command in a fresh network namespace that has only loopback: proof that nothing needs the network."""

import shutil
import subprocess
from collections.abc import Mapping, Sequence


def run_offline(
    cmd: Sequence[str], env: Mapping[str, str], timeout: int = 600, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    if not shutil.which("unshare") or not shutil.which("ip"):
        raise RuntimeError("unshare and ip (util-linux, iproute2) are needed; scripts/test installs them")
    quoted = " ".join("'" + c.replace("'", "'\\''") + "'" for c in cmd)
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {quoted}"],
        env=dict(env), capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )
