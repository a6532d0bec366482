"""Issue 9: rekeying under loss against charon 5.9.8, with traffic.

20 % of the packets arriving on each veth end are dropped (nftables, as
`netns-lab loss`), both ends rekey CHILD and IKE SAs in a loop — some at the
same moment, so RFC 7296 §2.8.1 collisions happen with lost messages — while a
ping runs through the tunnel. Afterwards, with the loss removed and both ends
quiet:

- both ends list the same IKE SA and the same CHILD SA (`ipsec-console sas
  --json` against `swanctl --list-sas`), one of each: nothing leaked; our
  datapath holds exactly the SPIs of that CHILD SA (once the inbound halves of
  SAs deleted as rekeyed have stopped lingering, 5 s as charon's
  delete_rekeyed_delay); no exception in our log;
- every lost ping is explained by the configured loss: each ESP packet nft drops
  is counted in its own chain, and a lost ping is one dropped ESP packet
  (request or reply). Any other lost ping was lost by an implementation.

The CI run lasts IPSEC_CONSOLE_SOAK_SECONDS (default 60 s of rekeying); set it
to 600 for the ten minutes issue 9 asks for. The rekey schedule is random with a
printed seed (IPSEC_CONSOLE_SOAK_SEED replays a schedule; the loss itself is
the kernel's random).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import threading
import time

import pytest

from engine.ike.sa import retransmit_budget
from tests.interop.lab import Lab, lab
from tests.interop.lab_esp import ping_stats
from tests.interop.peers import (
    FQDN_SECRETS,
    INNER,
    Peers,
    charon_child_spis,
    charon_conn,
    charon_ike_sas,
    control,
    our_child_spis,
    our_conn,
    our_ike_spis,
    our_policy_text,
    problems,
    wait_or_explain,
    with_children,
)

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("IPSEC_CONSOLE_SOAK_SECONDS", "60"))
PING_TAIL = 15  # the ping runs on after the last rekey, still under loss
LOSS = 20
PING_INTERVAL = 0.2
# Patient retransmissions on both ends: an exchange survives 20 % loss each way with
# probability 1 - 0.36**11 (about 1 in 90,000 fails); all of them take about 32 s.
CHARON_RETRANSMIT = "retransmit_timeout = 1\n              retransmit_base = 1.2\n              retransmit_tries = 10"
OUR_RETRANSMIT = {"retransmit_timeout": 1.0, "retransmit_base": 1.2, "retransmit_tries": 10}
# How long the ends may take to agree once the loss is off. A CHILD SA our side replaced and
# waits for the peer to delete is deleted by us after twice the retransmission budget
# (sa_timers.superseded): charon 5.9.8 can abandon such a delete when an IKE rekey moves its
# queued tasks, and then only that deadline converges the two ends. Plus a margin for our delete.
SETTLE_SECONDS = 2 * retransmit_budget(**{k.removeprefix("retransmit_"): v for k, v in OUR_RETRANSMIT.items()}) + 15

ACTIONS = ["ours_child", "charon_child", "ours_ike", "charon_ike", "both_child", "both_ike"]
WEIGHTS = [1, 1, 1, 1, 2, 2]  # collisions are where the RFC's hard cases are


def loss_counting_esp(L: Lab, percent: int) -> None:
    """Like Lab.loss, but ESP-in-UDP (port 4500, non-zero SPI) is dropped in a chain of its own,
    so its drops can be read apart from IKE's."""
    rules = (
        "table inet ipc_loss {\n"
        "  chain input {\n"
        "    type filter hook input priority -300; policy accept;\n"
        '    iifname "veth0" udp dport 4500 @th,64,32 != 0 jump esp_in\n'
        f'    iifname "veth0" numgen random mod 100 < {percent} counter drop\n'
        "  }\n"
        "  chain esp_in {\n"
        "    counter\n"
        f"    numgen random mod 100 < {percent} counter drop\n"
        "    accept\n"
        "  }\n"
        "}\n")
    for side in ("left", "right"):
        L.exec(side, "nft", "delete", "table", "inet", "ipc_loss", check=False)
        subprocess.run(["ip", "netns", "exec", L.ns[side], "nft", "-f", "-"], input=rules, text=True, check=True)


def dropped(L: Lab) -> dict[str, int]:
    """Packets nft dropped so far, both namespaces together: {"esp": n, "other": n}; and per side the
    ESP packets that arrived there ("esp arrived left") and those dropped ("esp dropped left")."""
    out = {"esp": 0, "other": 0}
    for side in ("left", "right"):
        text = L.exec(side, "nft", "list", "table", "inet", "ipc_loss").stdout
        arrived, esp = (int(n) for n in re.findall(r"counter packets (\d+)", text.split("chain esp_in", 1)[1]))
        out["esp"] += esp
        out[f"esp arrived {side}"], out[f"esp dropped {side}"] = arrived, esp
        out["other"] += sum(int(n) for n in re.findall(r"counter packets (\d+)", text.split("chain esp_in", 1)[0]))
    return out


def stages(sent: int, received: int, drops: dict[str, int], charon: dict[str, object]) -> str:
    """Where the pings went, stage by stage (ours at left pings charon's side at right): a stage that
    passes on fewer than it was given, beyond the configured loss, is where the implementation lost."""
    return (f"{sent} pings sent; {drops['esp arrived right']} ESP requests reached the right end "
            f"(nft dropped {drops['esp dropped right']}); charon's libipsec parsed {charon['parsed']}; "
            f"{drops['esp arrived left']} ESP replies reached the left end (nft dropped "
            f"{drops['esp dropped left']}); {received} answers came back to ping")


def rekey(action: str, o, c) -> None:
    """One step of the schedule; "both_*" fire both ends at the same moment (a collision)."""
    ours = lambda ike: o.cli("rekey", "t", *(["--ike"] if ike else []), check=False)  # noqa: E731
    theirs = lambda ike: c.swanctl("--rekey", "--ike" if ike else "--child", "t", check=False)  # noqa: E731
    ike = action.endswith("_ike")
    if action.startswith("ours"):
        ours(ike)
    elif action.startswith("charon"):
        theirs(ike)
    else:
        t = threading.Thread(target=theirs, args=(ike,))
        t.start()
        ours(ike)
        t.join()


def agreement(o, c):
    """Both ends' SAs when they agree on exactly one IKE SA and one CHILD SA pair, else None."""
    try:
        sas = o.sas()
    except subprocess.CalledProcessError:
        return None
    listing = c.list_sas()
    theirs = charon_ike_sas(listing)
    if len(sas) != 1 or sas[0]["state"] != "ESTABLISHED" or [s[1] for s in theirs] != ["ESTABLISHED"]:
        return None
    kids = sas[0]["children"]
    if len(kids) != 1 or kids[0]["state"] != "INSTALLED" or "REKEYING" in listing or "DELETING" in listing:
        return None
    ours_ike = our_ike_spis(o)
    if ours_ike != {(s[2], s[3]) for s in theirs} or our_child_spis(o) != charon_child_spis(listing):
        return None
    kid = kids[0]
    if datapath_spis(o) != {(kid["spi_in"], "in"), (kid["spi_out"], "out")}:
        return None
    return sas[0], listing


def datapath_spis(o) -> set[tuple[int, str]]:
    return {(x["spi"], x["direction"]) for x in control(o, "counters")["sas"]}


def both_ends(o, c) -> str:
    """What each end holds, for the record (our daemon may be gone)."""
    try:
        ours = [(sa["state"], [(k["state"], f"{k['spi_in']:08x}", f"{k['spi_out']:08x}") for k in sa["children"]])
                for sa in o.sas()]
        datapath = sorted((f"{spi:08x}", d) for spi, d in datapath_spis(o))
    except (subprocess.CalledProcessError, OSError) as exc:
        ours, datapath = f"no answer ({str(getattr(exc, 'stderr', exc)).strip()[-200:]})", None
    return f"ours: {ours}\nour datapath: {datapath}\ncharon:\n{c.list_sas()}"


def unanswered(ping_output: str, count: int) -> str:
    """The pings without an answer, each with the time it was sent (from its neighbours' replies,
    ping -D): runs of them are where to look in both logs."""
    answered = {int(m.group(2)): float(m.group(1))
                for m in re.finditer(r"\[(\d+\.\d+)\].*icmp_seq=(\d+) ", ping_output)}
    gone = [seq for seq in range(1, count + 1) if seq not in answered]
    errors = [line for line in ping_output.splitlines() if "ping:" in line or "rror" in line][:5]

    def when(seq: int) -> str:
        near = min(answered, key=lambda s: abs(s - seq), default=None)
        if near is None:
            return "?"
        t = answered[near] + (seq - near) * PING_INTERVAL
        return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
    return ", ".join(f"{seq} (~{when(seq)})" for seq in gone) + (f"; ping said {errors}" if errors else "")


def lost_by_charon(c) -> dict[str, object]:
    """What charon's libipsec dropped (esp = 2 in its log): inbound ESP for an SPI it holds no SA
    for (by SPI), replayed, not authentic or outside the SA's selectors, and outbound packets
    that found no SA or no policy."""
    text = (c.dir / "charon.log").read_text(errors="replace")
    unknown: dict[str, int] = {}
    spi = None
    for line in text.splitlines():
        m = re.search(r"parsed ESP header with SPI ([0-9a-f]{8})", line)
        if m:
            spi = m.group(1)
        elif "does not belong to an installed SA" in line:
            unknown[spi or "?"] = unknown.get(spi or "?", 0) + 1
    return {"inbound, no SA": unknown,
            "outbound, no SA": text.count("could not find an outbound IPsec SA"),
            "outbound, no policy": text.count("no matching outbound IPsec policy"),
            "replayed": text.count("sequence number verification failed"),
            "not authentic": text.count("decryption or ICV verification failed"),
            "inbound, outside the policy": text.count("discarding inbound IP packet"),
            "SAD entries not created": text.count("failed to create SAD entry"),
            "parsed": text.count("parsed ESP header")}


def test_rekey_loop_under_loss_keeps_both_ends_in_agreement(tmp_path):
    seed = int(os.environ.get("IPSEC_CONSOLE_SOAK_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"soak: {SOAK_SECONDS:.0f} s, seed {seed} (IPSEC_CONSOLE_SOAK_SEED={seed} replays the schedule)")
    with lab() as L, Peers(L, tmp_path) as p:
        c = p.charon("right", charon_conn("right", esp="aes256gcm16-x25519"), retransmit=CHARON_RETRANSMIT,
                     start=False)
        # libipsec says at level 2 which ESP packets it dropped and why (see lost_by_charon).
        c.strongswan_conf = c.strongswan_conf.replace("net = 1", "net = 1\n      esp = 2", 1)
        c.start()
        o = p.ours("left", our_policy_text("left", our_conn("left", esp="aes256gcm16-x25519",
                                                            children={"start_action": "start"}),
                                           engine=OUR_RETRANSMIT), FQDN_SECRETS)
        wait_or_explain(lambda: with_children(o) and "INSTALLED" in c.list_sas(), "the tunnel", o)
        loss_counting_esp(L, LOSS)
        count = int((SOAK_SECONDS + PING_TAIL) / PING_INTERVAL)
        # Every line, time-stamped (-D): the pings the loss does not explain can be found in the logs.
        ping = p.popen("ip", "netns", "exec", L.ns["left"], "ping", "-n", "-D", "-c", str(count),
                       "-i", str(PING_INTERVAL), "-W", "2", "-I", INNER["left"], INNER["right"])
        done: list[str] = []
        end = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < end:
            action = rng.choices(ACTIONS, WEIGHTS)[0]
            rekey(action, o, c)
            done.append(action)
            time.sleep(rng.uniform(0.5, 2.5))
        print(f"soak: {len(done)} rekeys: " + ", ".join(f"{a} {done.count(a)}" for a in ACTIONS))
        # The loss stays until the ping is over, so every lost ping has a counted drop to explain it.
        out, _ = ping.communicate(timeout=SOAK_SECONDS + 60)
        (tmp_path / "ping.txt").write_text(out)
        sent, received = ping_stats(out)
        drops = dropped(L)
        print(f"soak: charon's libipsec dropped {lost_by_charon(c)}; our datapath dropped "
              f"{control(o, 'counters').get('drops')}")
        print(f"soak: {stages(sent, received, drops, lost_by_charon(c))}")
        L.loss(0)
        settled = None
        try:
            settled = wait_or_explain(lambda: agreement(o, c), "both ends (and our datapath) to agree on one IKE "
                                      "and one CHILD SA", o,
                                      timeout=SETTLE_SECONDS, interval=1)
        finally:
            print(f"soak: ping {received}/{sent}, nft dropped {drops['esp']} ESP and {drops['other']} other "
                  f"packets\n{both_ends(o, c)}")
        sa, listing = settled
        kid = sa["children"][0]
        assert datapath_spis(o) == {(kid["spi_in"], "in"), (kid["spi_out"], "out")}, "our datapath holds other SAs"
        assert "Traceback" not in o.log(), problems(o)
        lost = sent - received
        assert lost == drops["esp"], (
            f"{lost} pings lost, {drops['esp']} ESP packets dropped by the configured loss: "
            f"{lost - drops['esp']} lost by the implementations; charon's libipsec dropped "
            f"{lost_by_charon(c)}; our datapath dropped {control(o, 'counters').get('drops')}; "
            f"{stages(sent, received, drops, lost_by_charon(c))}; "
            f"pings without an answer: {unanswered(out, count)}")
