"""A serial console log's end as text (core/console_text.py): escapes and controls gone, the last
lines kept within the limits, whatever the bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from provisioner.core.console_text import last_lines, readable

# What a SeaBIOS + isolinux + Linux boot leaves in a libvirt serial log (captured from a lab VM's).
SEABIOS = (b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n"
           b"Booting from DVD/CD...\r\n\x1b[1;1H\x1b[44;37m ISOLINUX 6.04 \x1b[0m\r\n"
           b"Loading /vmlinuz... ok\rLoading /initrd.img...ok\r\n"
           b"[    0.000000] Linux version 6.1.0-28-amd64\r\n\x00\x00"
           b"Welcome to \x1b[1mDebian GNU/Linux 12 (bookworm)\x1b[0m!\r\n")


def test_a_boot_log_reads_as_its_lines() -> None:
    assert readable(SEABIOS).split("\n") == [
        "SeaBIOS (version 1.16.2-debian-1.16.2-1)", "Booting from DVD/CD...", " ISOLINUX 6.04",
        "Loading /initrd.img...ok", "[    0.000000] Linux version 6.1.0-28-amd64",
        "Welcome to Debian GNU/Linux 12 (bookworm)!", ""]


def test_the_last_lines_within_the_limits() -> None:
    log = b"".join(b"line %d\r\n" % i for i in range(500))
    text, n = last_lines(b"\n" + log, max_lines=60, max_chars=100_000)
    assert n == 60 and text.split("\n")[0] == "line 440" and text.endswith("line 499")
    text, n = last_lines(b"\n" + log, max_lines=60, max_chars=50)
    assert len(text) <= 50 and text.endswith("line 499") and n == len(text.split("\n"))
    # A read that began mid-line drops the partial first line.
    assert last_lines(b"ne 7\nline 8\n", max_lines=5, max_chars=100) == ("line 8", 1)
    assert last_lines(b"", max_lines=5, max_chars=100) == ("", 0)


@given(raw=st.binary(max_size=4096), max_lines=st.integers(1, 80), max_chars=st.integers(1, 5000))
def test_any_bytes_give_bounded_printable_text(raw: bytes, max_lines: int, max_chars: int) -> None:
    text, n = last_lines(raw, max_lines=max_lines, max_chars=max_chars)
    assert len(text) <= max_chars and n <= max_lines
    assert n == (len(text.split("\n")) if text else 0)
    assert not any(ord(c) < 32 and c not in "\n\t" or c in "\x7f\x1b" for c in text), text
