"""A private etcd server for store tests: 127.0.0.1 only, free ports, tmp data.

Test modules build their own pytest fixtures on ``EtcdServer``; nothing here
touches an etcd the tests did not start, and the process is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ETCD_BINARY = shutil.which("etcd")
SKIP_REASON = "etcd binary not on PATH (Debian package etcd-server provides it)"

# Health probes go straight to 127.0.0.1, never through an environment proxy.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One single-node etcd process; ``start`` and ``stop`` may repeat."""

    def __init__(self, workdir: Path) -> None:
        self.data_dir = workdir / "data"
        self.log_path = workdir / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def command(self) -> list[str]:
        if ETCD_BINARY is None:
            raise RuntimeError(SKIP_REASON)
        client_url = f"http://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        return [
            ETCD_BINARY,
            "--name=t",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=t={peer_url}",
            "--log-outputs=stderr",
        ]

    def start(self, timeout_s: float = 20.0) -> None:
        """Start etcd and wait until /health answers true."""
        if self.process is not None:
            raise RuntimeError(f"etcd already running pid={self.process.pid}")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"etcd exited with {code}: {self.log_tail()}")
            if self._healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"etcd not healthy in {timeout_s}s: {self.log_tail()}")

    def stop(
        self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0
    ) -> None:
        """Signal our etcd by its pid and reap it; SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)

    def _healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.client_port}/health"
        try:
            with _NO_PROXY_OPENER.open(url, timeout=1) as response:
                return b'"true"' in response.read()
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
