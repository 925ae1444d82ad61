"""``main()`` ends a finished read-only command without the interpreter's teardown, and nothing else."""

from __future__ import annotations

import pytest

from loopml import cli


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@pytest.fixture
def fake_exit(monkeypatch):
    calls: list[int] = []

    def _exit(code: int) -> None:
        calls.append(code)
        raise _Exited(code)

    monkeypatch.setattr(cli.os, "_exit", _exit)
    monkeypatch.setattr(cli, "_skip_teardown", False)
    return calls


def _app(code: int, *, done: bool):
    def app() -> None:
        print("the document")
        if done:
            cli._done_skip_teardown()
        raise SystemExit(code)
    return app


def test_a_finished_command_ends_the_process_at_once_after_flushing(monkeypatch, fake_exit, capsys):
    monkeypatch.setattr(cli, "app", _app(0, done=True))
    with pytest.raises(_Exited):
        cli.main()
    assert fake_exit == [0]
    assert capsys.readouterr().out == "the document\n"


@pytest.mark.parametrize(("code", "done"), [(0, False), (2, True), (1, False)])
def test_other_exits_go_through_the_interpreter(monkeypatch, fake_exit, code, done):
    monkeypatch.setattr(cli, "app", _app(code, done=done))
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == code
    assert fake_exit == []


@pytest.mark.parametrize("asked", [True, False])
def test_a_loopml_error_exits_1_with_its_message_at_once_if_the_command_asked(monkeypatch, fake_exit, capsys, asked):
    def app() -> None:
        if asked:
            cli._done_skip_teardown()
        raise cli.InvalidConfig("bad --from")

    monkeypatch.setattr(cli, "app", app)
    if asked:
        with pytest.raises(_Exited):
            cli.main()
        assert fake_exit == [1]
    else:
        with pytest.raises(SystemExit) as info:
            cli.main()
        assert info.value.code == 1 and fake_exit == []
    assert "bad --from" in capsys.readouterr().err


def test_under_a_profiler_or_tracer_the_interpreter_ends_normally(monkeypatch, fake_exit):
    import sys

    monkeypatch.setattr(cli, "app", _app(0, done=True))
    monkeypatch.setattr(sys, "gettrace", lambda: (lambda *a: None))  # as coverage or a debugger would have it
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 0 and fake_exit == []


def test_a_flag_left_by_an_earlier_in_process_run_does_not_end_the_next(monkeypatch, fake_exit):
    monkeypatch.setattr(cli, "_skip_teardown", True)  # e.g. the evaluate function called in-process before
    monkeypatch.setattr(cli, "app", _app(0, done=False))
    with pytest.raises(SystemExit):
        cli.main()
    assert fake_exit == []
