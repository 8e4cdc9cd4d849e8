"""``liqheat tui`` end to end in real terminals: the installed console script on the demo market in a
private tmux server, then the same through a real SSH session (OpenSSH sshd on loopback, a throwaway key)
at 256 colours. Keys go in with ``send-keys``; what the user sees comes back with ``capture-pane``."""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tui_support import Tmux, free_port, liqheat_script, wait_for_file

pytestmark = [pytest.mark.terminal, pytest.mark.timeout(240)]

# Two days of demo history keep start-up short; the seed makes the market the same every run.
TUI_ARGS = "tui --history-days 2 --seed 11"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make system-deps)")
    return path


@pytest.fixture
def tmux():
    _need("tmux")
    t = Tmux(f"liqheat-test-{uuid.uuid4().hex[:8]}")
    yield t
    t.kill()


def _script() -> Path:
    script = liqheat_script()
    if not script.exists():
        pytest.skip(f"console script {script} is not installed (pip install -e .)")
    return script


def _switches_timeframe_and_tier(tmux: Tmux) -> None:
    # the legend is drawn with the map's first frame, which can land a refresh after the price marker
    screen = tmux.wait_for(lambda s: "demo:BTC/USDT:USDT" in s and " 5m · all tiers" in s and "◀" in s
                           and ("USD/cell" in s or "$/cell" in s), what="the first map and its USD legend")
    assert "ESTIMATED" in screen
    tmux.send("3")
    tmux.wait_for(lambda s: " 1h · all tiers" in s, what="1h after pressing 3")
    tmux.send("l")
    tmux.wait_for(lambda s: " 1h · 5x only" in s, what="the 5x tier after pressing l")
    tmux.send("l", "l")
    tmux.wait_for(lambda s: " 1h · 25x only" in s, what="the 25x tier")
    tmux.send("6")
    tmux.wait_for(lambda s: " 1w · 25x only" in s, what="1w after pressing 6")
    # one key per tier, straight to it (the footer lists them: a, then the ladder's tiers in order)
    assert "azxvbn tier" in screen
    tmux.send("b")
    tmux.wait_for(lambda s: " 1w · 50x only" in s, what="the 50x tier after pressing b")
    tmux.send("z")
    tmux.wait_for(lambda s: " 1w · 5x only" in s, what="the 5x tier after pressing z")
    tmux.send("n")
    tmux.wait_for(lambda s: " 1w · 100x only" in s, what="the 100x tier after pressing n")
    tmux.send("a")
    tmux.wait_for(lambda s: " 1w · all tiers" in s, what="all tiers again")


def test_tui_in_tmux_switches_views_and_quits_cleanly(tmux, tmp_path):
    status = tmp_path / "status"
    cmd = f"sh -c {shlex.quote(f'{_script()} {TUI_ARGS}; echo $? > {status}')}"
    tmux.start(cmd, env={"TERM": "xterm-256color"})
    # the first frame comes before the history has loaded
    tmux.wait_for(lambda s: "LOADING" in s or "demo:BTC" in s, seconds=15, what="a first frame")
    _switches_timeframe_and_tier(tmux)
    before = tmux.capture()
    tmux.send("q")
    assert wait_for_file(status) == "0"
    assert "demo:BTC/USDT:USDT" in before


@pytest.mark.parametrize("depth", ["16", "NO_COLOR"])
def test_tui_colour_depths_in_a_real_terminal(tmux, tmp_path, depth):
    """16 colours and NO_COLOR draw the map with the glyph ramp; 16 colours use only the base palette,
    NO_COLOR no colour at all (not even greys) — the intensity is in the glyphs either way."""
    status = tmp_path / "status"
    flag = "--colors 16" if depth == "16" else ""
    cmd = f"sh -c {shlex.quote(f'{_script()} {TUI_ARGS} {flag}; echo $? > {status}')}"
    env = {"TERM": "xterm-256color"} | ({"NO_COLOR": "1"} if depth == "NO_COLOR" else {})
    tmux.start(cmd, env=env)
    screen = tmux.wait_for(lambda s: "◀" in s and "5m · all tiers" in s, what=f"the {depth} map")
    assert "▀" not in screen and any(g in screen for g in "░▒▓█")
    coloured = tmux.capture(escapes=True)
    assert "38;2;" not in coloured and "48;2;" not in coloured
    palette_codes = {int(n) for n in re.findall(r"\x1b\[(?:[0-9;]*;)?[34]8;5;(\d+)", coloured)}
    if depth == "16":
        assert not palette_codes  # only the 16 base colours (30-37, 90-97...)
    else:
        sgr = [int(n) for seq in re.findall(r"\x1b\[([0-9;]*)m", coloured) for n in seq.split(";") if n]
        colours = [n for n in sgr if 30 <= n <= 37 or 40 <= n <= 47 or 90 <= n <= 97 or 100 <= n <= 107
                   or n in (38, 48)]
        assert not colours, sorted(set(colours))  # only bold/dim/reverse and the terminal's default colours
    tmux.send("q")
    assert wait_for_file(status) == "0"


def test_tui_over_ssh_at_256_colours(tmux, tmp_path):
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists():
        pytest.skip("OpenSSH server (/usr/sbin/sshd) is not installed (make system-deps)")
    _need("ssh")
    _need("ssh-keygen")
    user = getpass.getuser()
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        # sshd's compiled-in privilege-separation directory, normally made by the service unit
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True,
                       timeout=30)
    (tmp_path / "authorized_keys").write_text((tmp_path / "client_key.pub").read_text())
    os.chmod(tmp_path / "authorized_keys", 0o600)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        "\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {tmp_path / 'host_key'}",
            f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}",
            f"PidFile {tmp_path / 'sshd.pid'}",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitUserEnvironment no",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel ERROR",
            "",
        ])
    )
    check = subprocess.run([str(sshd), "-t", "-f", str(config)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        pytest.skip(f"sshd cannot run here: {check.stderr.strip()[:200]}")
    server = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        status = tmp_path / "status"
        remote = f"cd {shlex.quote(str(Path.cwd()))} && exec {_script()} {TUI_ARGS}"
        ssh = " ".join([
            "ssh", "-t", "-F", "/dev/null", "-i", str(tmp_path / "client_key"), "-p", str(port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "LogLevel=ERROR",
            f"{user}@127.0.0.1", shlex.quote(remote),
        ])
        # OpenSSH forwards TERM but not COLORTERM: a 256-colour session, the usual case over SSH
        tmux.start(f"sh -c {shlex.quote(f'{ssh}; echo $? > {status}')}", env={"TERM": "xterm-256color"})
        try:
            _switches_timeframe_and_tier(tmux)
        except AssertionError:
            server.terminate()
            raise AssertionError(f"sshd said: {server.communicate(timeout=10)[1][-500:]}") from None
        coloured = tmux.capture(escapes=True)
        assert "38;5;" in coloured, "expected 256-colour escape codes"
        assert "38;2;" not in coloured and "48;2;" not in coloured, "truecolor codes over a 256-colour session"
        tmux.send("q")
        assert wait_for_file(status) == "0"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        if server.stderr is not None:
            server.stderr.close()  # an unclosed pipe is a ResourceWarning (an error under -W error)


def test_tui_ctrl_c_quits_with_status_0(tmux, tmp_path):
    status = tmp_path / "status"
    cmd = f"sh -c {shlex.quote(f'{_script()} {TUI_ARGS}; echo $? > {status}')}"
    tmux.start(cmd, env={"TERM": "xterm-256color"})
    tmux.wait_for(lambda s: "ESTIMATED" in s, seconds=30, what="a first frame")
    tmux.send("C-c")
    assert wait_for_file(status) == "0"


def test_tui_narrow_and_tiny_terminals(tmux, tmp_path):
    """At 70 columns the status line (health, ESTIMATED, view) stays; at 40x10 the screen says the terminal
    is too small instead of sitting on "starting…"."""
    status = tmp_path / "status"
    cmd = f"sh -c {shlex.quote(f'{_script()} {TUI_ARGS}; echo $? > {status}')}"
    tmux.width, tmux.height = 70, 24
    tmux.start(cmd, env={"TERM": "xterm-256color"})
    screen = tmux.wait_for(lambda s: "◀" in s and "5m · all tiers" in s, what="the map at 70 columns")
    lines = screen.splitlines()
    assert "ESTIMATED" in lines[1] and "DEMO" in lines[1]
    tmux.send("q")
    assert wait_for_file(status) == "0"
    tmux.kill()
    tiny = Tmux(f"{tmux.name}-tiny", 40, 10)
    try:
        tiny.start(cmd.replace(str(status), str(status) + "2"), env={"TERM": "xterm-256color"})
        tiny.wait_for(lambda s: "terminal too small" in s and "40×10" in s, seconds=30, what="the too-small note")
        tiny.send("q")
        assert wait_for_file(Path(str(status) + "2")) == "0"
    finally:
        tiny.kill()


@pytest.mark.parametrize(("args", "says"), [
    ("--feed nosuch", "nosuch"),
    ("--symbol NOPE --history-days 1", "NOPE"),
    ("--feed file:/nonexistent/liqheat-bars.csv", "nonexistent"),
    ("--connect http://127.0.0.1:{port} --wait 1", "127.0.0.1"),
    ("--history-days -1", "--history-days"),
])
def test_tui_start_up_failure_prints_one_line_and_exits_2(tmux, tmp_path, args, says):
    """What cannot start is a bad command line: one line on the terminal, exit status 2 (not an error
    screen and status 0)."""
    status = tmp_path / "status"
    args = args.format(port=free_port())
    cmd = f"sh -c {shlex.quote(f'{_script()} tui {args}; echo $? > {status}')}"
    tmux.start(cmd, env={"TERM": "xterm-256color"})
    assert wait_for_file(status, seconds=90) == "2"
    screen = tmux._run("capture-pane", "-p", "-J", "-S", "-", "-t", "0").stdout  # joined, with history
    said = [line for line in screen.splitlines() if line.startswith("liqheat tui:")]
    assert len(said) == 1 and says in said[0], screen
    assert "Traceback" not in screen


def test_cli_refuses_without_a_terminal():
    script = _script()
    out = subprocess.run([str(script), "tui"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=60)
    assert out.returncode == 2
    assert "needs a terminal" in out.stderr


def test_cli_rejects_a_bad_ladder():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "tui", "--ladder", "{bad"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "ladder" in out.stderr
