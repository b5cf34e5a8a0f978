"""The Quake 3 family's getstatus (ioquake3, OpenArena) as the prober asks it, over loopback UDP:
answers as ioquake3's SVC_Status writes them, the wake gate's own answer, and hostile ones."""
import asyncio
import socket
import threading
import time

import pytest

from peon.gate import quake3 as gate_quake3
from peon.gate.view import SleepingServer
from peon.shared import players
from peon.shared.players import Garbled, Players

M = b"\xff\xff\xff\xff"


def status(challenge: str, lines=(), info="\\sv_maxclients\\8\\mapname\\oa_dm1"
           "\\sv_hostname\\^1Frag ^7Night\\version\\ioq3 1.36_GIT linux-x86_64"
           "\\gamename\\baseoa") -> bytes:
    """An answer laid out as SVC_Status does: info (challenge last), newline, player lines."""
    body = info + f"\\challenge\\{challenge}\n" + "".join(f"{line}\n" for line in lines)
    return M + b"statusResponse\n" + body.encode("latin-1")


class Quake3Server:
    """A loopback UDP server; `reply(request) -> [datagrams]` says what goes back."""

    def __init__(self, reply):
        self.reply, self.requests = reply, []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            self.requests.append(data)
            for datagram in self.reply(data):
                self.sock.sendto(datagram, peer)

    def close(self):
        self.sock.close()


def challenge_of(request: bytes) -> str:
    return request.split(b" ", 1)[1].decode()


def info_response(challenge: str, protocol="71") -> bytes:
    return (M + b"infoResponse\n" + f"\\challenge\\{challenge}\\gamename\\Quake3Arena"
            f"\\protocol\\{protocol}\\hostname\\Frag Night\\clients\\3".encode())


def ioq3(lines=(), **kw):
    """Answers as ioquake3 1.36 does: getstatus without the protocol, getinfo with it."""
    def reply(request):
        if request.startswith(M + b"getinfo "):
            return [info_response(challenge_of(request))]
        return [status(challenge_of(request), lines, **kw)]
    return reply


def ask(reply, timeout=1.0):
    server = Quake3Server(reply)
    try:
        return asyncio.run(players.query("quake3", "127.0.0.1", server.port, timeout)), server
    finally:
        server.close()


def test_players_names_map_and_hostname_from_getstatus():
    lines = ['12 48 "^3Sarge"', '0 0 "Grunt"', '-2 999 "a ^^2b"']
    answer, server = ask(ioq3(lines))
    assert answer == Players(3, 8)
    assert answer.names == ("Sarge", "Grunt", "a ^b")
    assert (answer.name, answer.map, answer.protocol) == ("Frag Night", "oa_dm1", 71)
    assert answer.version == "ioq3 1.36_GIT linux-x86_64"
    # getinfo's gamename, not getstatus's (baseoa): the one a browser compares with its own
    assert answer.game == "Quake3Arena"
    # getstatus, then getinfo for the protocol number, each with a challenge of its own.
    assert [r.split(b" ")[0] for r in server.requests] == [M + b"getstatus", M + b"getinfo"]
    assert len({challenge_of(r) for r in server.requests}) == 2
    assert all(len(challenge_of(r)) == 16 for r in server.requests)


def test_without_getinfo_s_answer_the_count_stands_without_the_protocol():
    started = time.monotonic()
    answer, server = ask(lambda r: [status(challenge_of(r))] if b"getstatus" in r else [])
    assert answer == Players(0, 8) and answer.protocol is None and answer.name == "Frag Night"
    assert time.monotonic() - started < 0.5 + players.QUAKE3_INFO_WAIT
    garbled, _ = ask(lambda r: [status(challenge_of(r)) if b"getstatus" in r else M + b"junk"])
    assert garbled == Players(0, 8) and garbled.protocol is None


def test_getinfo_is_asked_for_the_gamename_and_a_status_protocol_stands_without_it():
    info = "\\sv_maxclients\\4\\protocol\\68"
    answer, server = ask(lambda r: [status(challenge_of(r), info=info)] if b"getstatus" in r
                         else [])
    assert answer == Players(0, 4) and answer.protocol == 68 and answer.game is None
    assert [r.split(b" ")[0] for r in server.requests] == [M + b"getstatus", M + b"getinfo"]


def test_an_empty_server_is_zero_players_and_private_slots_are_not_offered():
    info = "\\sv_maxclients\\12\\sv_privateClients\\2\\mapname\\oa_dm4\\sv_hostname\\x"
    answer, _ = ask(ioq3(info=info))
    assert answer == Players(0, 10) and answer.names == ()


def test_the_gate_s_own_answer_reads_as_the_sleeping_server():
    server = SleepingServer(name="Frag Night", map="oa_dm4", game="Quake3Arena", protocol=71,
                            max_players=12, version="ioq3 1.36", port=27960)
    answer, _ = ask(lambda r: [gate_quake3.answer(server, r, gate_quake3.Drops()).reply])
    assert answer == Players(0, 12)
    assert (answer.name, answer.version, answer.protocol) == ("Frag Night", "ioq3 1.36", 71)
    assert answer.game == "Quake3Arena"  # what the gate was told the server said it is
    assert answer.map.startswith("oa_dm4")


def test_a_stale_answer_to_another_challenge_is_passed_over():
    def reply(r):
        if b"getinfo" in r:  # a late statusResponse, then the answer
            return [status(challenge_of(r)), info_response("old", "1"),
                    info_response(challenge_of(r))]
        return [status("someone-else", ['1 1 "x"'] * 5), status(challenge_of(r), ['1 1 "y"'])]
    answer, _ = ask(reply)
    assert answer == Players(1, 8) and answer.names == ("y",) and answer.protocol == 71


def test_only_answers_to_other_challenges_are_unknown_within_the_timeout():
    answer, server = ask(lambda r: [status("nope")] * 3, timeout=0.3)
    assert answer is None and len(server.requests) == 1


@pytest.mark.parametrize("datagram", [
    b"",
    M + b"infoResponse\n\\sv_maxclients\\8",
    M + b"statusResponse\n",
    M + b"statusResponse\nsv_maxclients\\8\n",            # not an info string
    M + b"statusResponse\n\\sv_maxclients\\8\\odd\n",     # a key without its value
    M + b"statusResponse\n\\mapname\\q3dm1\n",           # no player limit
    M + b"statusResponse\n\\sv_maxclients\\-1\n",
    M + b"statusResponse\n\\sv_maxclients\\99999999999\n",
    M + b"statusResponse\n\\sv_maxclients\\8\nnot a player\n",
    M + b"statusResponse\n\\sv_maxclients\\8\n" + b'1 1 "p"\n' * 65,  # beyond MAX_CLIENTS
    M + b"statusResponse\n\\sv_maxclients\\8\\x\\" + b"y" * 17000 + b"\n",
])
def test_garbled_answers_are_refused(datagram):
    with pytest.raises(Garbled):
        players.parse_quake3_status(datagram)
    answer, _ = ask(lambda r: [datagram], timeout=0.3)
    assert answer is None


def test_texts_are_bounded_and_without_control_characters():
    info = "\\sv_maxclients\\8\\sv_hostname\\" + "h\x01" * 500 + "\\mapname\\" + "m" * 900
    answer, _ = ask(ioq3(['0 5 "' + "n\x7f" * 300 + '"'], info=info))
    assert answer == Players(1, 8)
    for value in (answer.name, answer.map, answer.names[0]):
        assert len(value.encode()) <= players.TEXT_MAX
        assert all(c >= " " for c in value)


def test_a_silent_server_is_unknown_not_empty():
    answer, server = ask(lambda r: [], timeout=0.3)
    assert answer is None and len(server.requests) == 1
