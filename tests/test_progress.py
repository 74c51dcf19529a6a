"""onflame.progress: n/N and time left, redrawn on a terminal, plain lines in a log."""
import io

from onflame.progress import Progress, format_seconds


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_format_seconds_reads_as_people_say_it():
    assert format_seconds(42.4) == "42 s"
    assert format_seconds(185) == "3 min 05 s"
    assert format_seconds(7440) == "2 h 04 min"


def test_a_log_gets_plain_lines_the_first_and_last_always():
    log = io.StringIO()
    with Progress(3, "build X", stream=log, min_interval=3600) as p:
        for name in ("a", "b", "c"):
            p.advance(name)
    lines = log.getvalue().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == ["build X: 1/3", "build X: 3/3"]
    assert "\r" not in log.getvalue()
    assert "left" in lines[0] and "left" not in lines[1]  # time left while items remain, none at the end
    assert lines[0].endswith(" a") and lines[1].endswith(" c")


def test_a_terminal_gets_one_line_redrawn_and_notes_between():
    tty = Terminal()
    p = Progress(2, "report", stream=tty)
    p.advance("one")
    p.note("onflame: x.obj: broken")
    p.advance("two")
    out = tty.getvalue()
    assert out.count("\n") == 2 and out.endswith("\n")
    assert "onflame: x.obj: broken\n" in out and "report: 2/2" in out


def test_disabled_prints_nothing():
    log = io.StringIO()
    p = Progress(5, "x", stream=log, enabled=False)
    p.advance()
    p.close()
    assert log.getvalue() == ""
