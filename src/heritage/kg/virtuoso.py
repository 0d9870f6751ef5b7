"""A throwaway local Virtuoso server, for tests, benchmarks and trying the server path.

Virtuoso Open Source (``apt-get install virtuoso-opensource``) is the server SILKNOW's
knowledge graph ran on. :class:`VirtuosoServer` starts ``virtuoso-t`` on free ports with a
fresh database in a folder of its own, waits until its SPARQL endpoint answers, and stops it
(and, for a temporary folder, deletes it) on :meth:`VirtuosoServer.stop`. The database's
administrator is ``dba`` with password ``dba``, as on every fresh Virtuoso: this is for
local use, never for a server others can reach.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from heritage.kg.endpoint import SparqlEndpoint

__all__ = ["VirtuosoServer", "virtuoso_executable"]

_INI = """[Database]
DatabaseFile = {folder}/virtuoso.db
ErrorLogFile = {folder}/virtuoso.log
LockFile = {folder}/virtuoso.lck
TransactionFile = {folder}/virtuoso.trx
xa_persistent_file = {folder}/virtuoso.pxa
TempStorage = TempDatabase

[TempDatabase]
DatabaseFile = {folder}/virtuoso-temp.db
TransactionFile = {folder}/virtuoso-temp.trx

[Parameters]
ServerPort = 127.0.0.1:{sql_port}
DisableUnixSocket = 1
NumberOfBuffers = {buffers}
MaxDirtyBuffers = {dirty}
CheckpointInterval = 60
DirsAllowed = ., {folder}

[HTTPServer]
ServerPort = 127.0.0.1:{http_port}
ServerRoot = {folder}
ServerThreads = 8
MaxClientConnections = 8

[SPARQL]
ResultSetMaxRows = 1000000
MaxQueryExecutionTime = 600
MaxQueryCostEstimationTime = 600
"""


def virtuoso_executable() -> str | None:
    """Path of ``virtuoso-t`` (Debian's package) or ``virtuoso``, if installed."""
    return shutil.which("virtuoso-t") or shutil.which("virtuoso")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VirtuosoServer:
    """A running ``virtuoso-t``; use as a context manager or call :meth:`stop`.

    ``memory_mb``: page buffers (8 KiB each), Virtuoso's main cache: a few hundred MB for
    tests, a few GB for millions of triples.
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        memory_mb: int = 256,
        timeout: float = 90.0,
        executable: str | None = None,
    ) -> None:
        exe = executable or virtuoso_executable()
        if exe is None:
            raise FileNotFoundError(
                "virtuoso-t not found; install Virtuoso Open Source (Debian/Ubuntu: "
                "apt-get install virtuoso-opensource)"
            )
        self._temporary = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="heritage-virtuoso-")).absolute()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port, self.sql_port = _free_port(), _free_port()
        buffers = max(2000, memory_mb * 1024 // 8)
        (self.folder / "virtuoso.ini").write_text(
            _INI.format(
                folder=self.folder,
                sql_port=self.sql_port,
                http_port=self.http_port,
                buffers=buffers,
                dirty=buffers * 3 // 4,
            )
        )
        self._log = open(self.folder / "stdout.log", "wb")  # noqa: SIM115 (closed in stop)
        try:
            self.process = subprocess.Popen(
                [exe, "-f", "-c", "virtuoso.ini"],
                cwd=self.folder,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:  # not started: close the log, remove a temporary folder
            self._log.close()
            if self._temporary:
                shutil.rmtree(self.folder, ignore_errors=True)
            raise
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def endpoint(self, **kwargs) -> SparqlEndpoint:
        """The server's endpoint, as ``dba`` (updates on ``/sparql-auth``, Digest auth)."""
        return SparqlEndpoint.virtuoso(self.url, **kwargs)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = f"{self.url}/sparql?query=ASK%7B%7D"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"virtuoso-t exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(probe, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"Virtuoso did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        log = self.folder / "virtuoso.log"
        text = log.read_text(errors="replace") if log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Shut the server down (it checkpoints first), then remove a temporary folder."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        if self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> VirtuosoServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
