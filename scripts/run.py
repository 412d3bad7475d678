"""`make run`: the Procfile under honcho, stopped cleanly by Ctrl-C.

Arguments are honcho's (``start -f Procfile -p 8000``). What differs from a bare
``honcho start``:

- Honcho runs as a job of its own (own process group), made the terminal's foreground job as
  a shell does, so Ctrl-C reaches honcho and not ``make``: make then sees a clean exit instead
  of dying of SIGINT and printing "Error 130". The terminal is handed back at the end. A
  SIGINT, SIGTERM or SIGHUP sent to this process (e.g. to make's whole process group) is
  passed on to honcho; honcho stops everything on SIGHUP too, and when its terminal hangs up
  (the window closed) while it is the terminal's foreground job, then writing to nowhere:
  every way of stopping the run stops all of it. A run sent to the background (`make run &`)
  is left running when the terminal closes.
- Honcho stops a process by sending SIGTERM to its whole process group, which includes the
  prefork pool children of a Celery worker: they die of it and the worker logs each one as
  an ERROR. Here SIGTERM goes to the process itself (the Procfile ``exec``s each command),
  and a worker stops its pool children as it should. SIGKILL still goes to the group.
- Processes get STOP_GRACE seconds (not honcho's 5) to stop before they are killed; an idle
  Celery worker takes about 3 s. A run ended by a signal exits with 0.
- Every process gets the port given (``PORT``, the web server's). Honcho gives each its own,
  100 more than the one before: above web's 65135 the workers' and beat's were beyond 65535,
  which the settings refuse, and they stopped at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading

STOP_GRACE = 8
INTERRUPTED = {130, 143}  # honcho's exit codes after SIGINT and SIGTERM
_HONCHO = "--as-honcho"
# Honcho in the terminal's foreground job (a run sent to the background, `make run &`, goes
# on when the terminal closes, as its user asked).
_IN_FRONT = "--in-front"


def one_port(expand):
    """Honcho's ``expand_processes`` giving every process the first one's ``PORT``."""

    def expand_processes(*args, **kwargs):
        processes = expand(*args, **kwargs)
        if processes and "PORT" in processes[0].env:
            for process in processes[1:]:
                process.env["PORT"] = processes[0].env["PORT"]
        return processes

    return expand_processes


def run_honcho(argv: list[str], in_front: bool) -> None:
    """Honcho's command line, with the changes above."""
    import honcho.command
    import honcho.environ
    import honcho.manager
    from honcho.compat import ProcessManager
    from honcho.printer import Printer

    class SignalTheProcessOnly(ProcessManager):
        def terminate(self, pid: int) -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    class OutputMayVanish(Printer):
        def write(self, message) -> None:
            with contextlib.suppress(OSError):  # the terminal hung up: EIO
                super().write(message)

    honcho.manager.KILL_WAIT = STOP_GRACE
    honcho.environ.expand_processes = one_port(honcho.environ.expand_processes)
    honcho.manager.ProcessManager = SignalTheProcessOnly
    honcho.command.Printer = OutputMayVanish
    signal.signal(signal.SIGHUP, lambda signum, frame: _stop_writing_nowhere())
    tty = _terminal(foreground=False) if in_front else None
    if tty is not None:
        threading.Thread(target=_watch_for_hang_up, args=(tty,), daemon=True).start()
    honcho.command.main(argv)


def _watch_for_hang_up(tty: int) -> None:
    """The terminal closed (its window, an SSH session): the kernel signals only the
    session's leader (make, or a shell, which signals make's job, not honcho's), and honcho
    would go on, its processes with it, writing to nowhere."""
    poll = select.poll()
    poll.register(tty, 0)  # only a hang-up, or an error, ends the wait
    while not poll.poll():
        pass
    _stop_writing_nowhere()


def _stop_writing_nowhere() -> None:
    """Stop as on SIGTERM, all output from now on going to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (1, 2):
        os.dup2(devnull, stream)
    os.close(devnull)
    os.kill(os.getpid(), signal.SIGTERM)


def _terminal(foreground: bool = True) -> int | None:
    """The controlling terminal, if there is one (and this process is in its foreground
    job, unless ``foreground`` is False)."""
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        return None
    with contextlib.suppress(OSError):
        if not foreground or os.tcgetpgrp(tty) == os.getpgrp():
            return tty
    os.close(tty)
    return None


def _set_foreground(tty: int, pgrp: int) -> None:
    # A background group changing the terminal's foreground group gets SIGTTOU.
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(tty, pgrp)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def main(argv: list[str]) -> int:
    honcho: subprocess.Popen | None = None
    asked: list[int] = []

    def pass_on(signum, frame):
        # SIGHUP would kill honcho and leave its processes running: ask for a stop instead.
        asked.append(signal.SIGTERM if signum == signal.SIGHUP else signum)
        if honcho is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(honcho.pid, asked[-1])

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, pass_on)
    # Ctrl-Z would stop honcho with no shell to resume it (make holds the job).
    signal.signal(signal.SIGTSTP, signal.SIG_IGN)

    tty = _terminal()
    front = [_IN_FRONT] if tty is not None else []
    honcho = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), _HONCHO, *front, *argv], process_group=0
    )
    if tty is not None:
        _set_foreground(tty, honcho.pid)
    if asked:
        os.kill(honcho.pid, asked[-1])
    try:
        code = honcho.wait()
    finally:
        if tty is not None:
            with contextlib.suppress(OSError):
                # Unless the terminal has moved on (make killed, the shell took it back).
                if os.tcgetpgrp(tty) == honcho.pid:
                    _set_foreground(tty, os.getpgrp())
            os.close(tty)
    if code in INTERRUPTED:
        return 0
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if sys.argv[1:2] == [_HONCHO]:
        in_front = sys.argv[2:3] == [_IN_FRONT]
        run_honcho(sys.argv[3 if in_front else 2 :], in_front)
    else:
        sys.exit(main(sys.argv[1:]))
