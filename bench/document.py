"""docs/benchmarks.md: the method, the machine, every table, the verdicts and the charts."""

from __future__ import annotations

import datetime
from typing import Any

from . import ab, long_line, report, scale_out_report, verdicts
from .procs import ROOT
from .scenarios import FALLS_APART_SECONDS, IDLE_SECONDS, PACED_GRACE
from .systems import SYSTEMS

PROFILE = ROOT / "bench" / "profile.md"


def _machine(m: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    pinned = (
        "yes: every server under test runs under `taskset -c 0`; the mock upstreams and the "
        "load generator run on CPU 1"
        if m["pinned"]
        else "**no** (taskset missing or fewer than 2 CPUs): numbers are not comparable"
    )
    before, after = m["load_before"], m.get("load_after", ["?"] * 3)
    return "\n".join(
        [
            "| | |",
            "|---|---|",
            f"| CPU | {m['cpu']}, {m['cpus']} cores |",
            f"| memory | {m['memory_gib']} GiB |",
            f"| kernel, Python | Linux {m['kernel']}, Python {m['python']} |",
            f"| fanout | commit {m.get('revision', 'unknown')} |",
            f"| packages | {packages} |",
            f"| pinning | {pinned} |",
            "| network | loopback only |",
            f"| load average (1/5/15 min) | before {before}, after {after} |",
            f"| run time | {m.get('seconds', 0) / 60:.1f} min: `{m.get('command', '?')}` |",
        ]
    )


def _systems() -> str:
    rows = ["| system | what it is | started as (pinned to CPU 0) |", "|---|---|---|"]
    what = {
        "fanout": "this project, default config, log level warning",
        "websockets": "`websockets` (asyncio server); per delta one `broadcast()` of the "
        "encoded frame to the room's connections",
        "socketio": "python-socketio `AsyncServer` on aiohttp; clients `enter_room` on "
        "connect; per delta one `emit(..., room=)`",
        "raw": "aiohttp; per delta the frame is encoded once, then `await ws.send_frame()` "
        "for each socket in turn: no outbox, no task per subscriber",
        "sse-proxy": "aiohttp; each `GET /chat` opens its own upstream stream and relays it "
        "as server-sent events: N viewers, N upstream requests",
    }
    for s in SYSTEMS:
        url = "--port P --upstream-url http://127.0.0.1:M/v1 --model mock"
        cmd = f"taskset -c 0 python -m {'server serve' if s.module == 'server' else s.module} {url}"
        rows.append(f"| {s.label} | {what[s.key]} | `{cmd}` |")
    return "\n".join(rows)


LIMITS = """\
The paced profile below (py-spy, sampling the server during an answer to 5,000 viewers at 80
tokens/s) puts about three quarters of the samples inside asyncio's
`_SelectorSocketTransport.write`, that is the `send()` system call that puts one frame on one
socket; most of the rest is fanout's per-viewer loop (`FanoutRounds._step` -> `Subscriber.send` ->
`WebSocketSink.write_now`). In the burst profile, where a round carries many chunks and
there are only 500 viewers, reading the upstream (the SSE decoder, JSON, the accumulator, the
merge) takes about half. The sampler overstates the per-viewer Python: timed alone, against
transports that do nothing, the loop costs 0.3-0.5 us per viewer, against about 10 us per
viewer in a real round (a round to 5,000 viewers takes about 50 ms of this core). So a round
costs one `send()` per viewer (on loopback a `send()` also runs the receiving socket's TCP
input, in the sender's softirq), and one core manages roughly 100k of them a second: the wall
websockets.broadcast and the raw floor hit (their frames/s in the burst table).

What keeps fanout ahead of that wall is how few rounds it makes: everything one read of the
upstream brings goes out as one delta (`RoomState.feed_many`), and rounds follow the core's
pace, not the model's. A round to a large room also goes a slice of 256 viewers at a time
(`server/rooms/rounds.py`), reading the upstream between slices: what arrives meanwhile reaches the
viewers the round has not reached yet, merged with what they were due, and the next round
starts at once for the others. Sent in one go, a chunk that arrives just after a round began
waits for that round and then for its own, up to two rounds; sliced, it reaches every viewer
within one, for the same number of sends. In the burst that turns 2,000 deltas into a handful
of frames per viewer (compare deliveries/s and frames/s); the peers, at one frame per token,
fall behind for good as soon as 80 x N sends a second exceed what the core can do (between
1,000 and 1,500 viewers here). In a check that alternated this version and the previous one
on a quiet machine (3 runs each, 80 tokens/s), p50 went from 55-59 ms to 36-38 ms at 5,000
viewers and from 32-33 ms to 23-24 ms at 3,000; p99 from 155-187 ms to 121-158 ms at 5,000,
and stayed at 72-83 ms at 3,000.

A change to the load generator, made openly: its sink viewers used to share one 4 kB
`SO_RCVLOWAT`. They all get the same bytes, so all 4,500 of them crossed it on the same
round, woke together, and the generator parsed about 100,000 frames (some 150 ms of its
core) while the probes' frames waited behind them: once or twice per answer every probe's
tokens of that moment arrived up to 150 ms late, 2-4% of the samples, more than the 1% a p99
allows. That tail was the generator's, not the server's, and it was most of the p99 at 5,000
viewers: the previous full run, with the shared threshold and this same server, measured
122 ms (121-129) there, and 63.7 ms at 3,000. Each sink now gets its own threshold, spread
evenly over 2-6 kB (the same 4 kB mean, the same batching of the generator's reads), so they
wake on different rounds, as viewers on many machines would. This applies to every system
alike; the peers' numbers at the sizes they reach are not changed by it.

Idle memory: the raw floor, the same aiohttp server with nothing else, costs about 14 kB per
connection, and fanout now adds about 2 kB (it added 7 kB before). What went: aiohttp's
heartbeat per connection (its state pushed every WebSocket response's attribute dict into a
larger size, about 1.6 kB; one heartbeat for the whole instance, `server/http/heartbeat.py`, now
visits the connections a set at a time and pings the silent ones), the writer task per
connection (about 1 kB: one is started only while a subscriber's outbox holds something), the
outbox's empty deque (about 0.7 kB, shared while empty), the security headers kept on every
101 response (0.5 kB), and two of the three coroutine frames an idle connection's handler
waited in (about 0.6 kB).

The codec: messages are msgspec structs encoded by msgspec (it was the standard library's
JSON encoder over hand-built dicts). Timed alone on this machine, one upstream chunk of about
1 kB parsed, fed to the room and its delta encoded takes 11 us (18 us before), and merging 20
such deltas into one frame and encoding it 26 us (86 us before). The server's share of a
round is the send per viewer. The burst moves more than that from run to run on this
machine: the full run before this change measured 11.0 million deliveries/s, a first full run
after it 9.3 million, then (the mock upstream fixed, below) a burst-only run of 3 rounds 11.2
million and this full run 8.1 million; alternating runs of the code before and after the
codec change gave overlapping spreads (7-12.6 million). The mock upstream, which shares the
load generator's core, parsed the model name once per token; it now parses it once per
stream and costs what it did before the Responses API was added to it.
"""


def render(saved: dict[str, Any], charts: dict[str, str]) -> str:
    """The whole document."""
    plan, machine, records = saved["plan"], saved["machine"], saved["records"]
    date = datetime.date.today().isoformat()
    rounds = plan["rounds"]
    stalled_n = max(1, round(plan["stall_viewers"] * plan["stall_fraction"]))
    healthy = plan["stall_viewers"] - stalled_n
    stall_total = plan["stall_viewers"]
    burst_chart = f"\n![burst chart]({charts['burst']})\n" if "burst" in charts else ""
    paced_chart = f"\n![paced chart]({charts['paced']})\n" if "paced" in charts else ""
    profile = PROFILE.read_text() if PROFILE.is_file() else "No profile yet: run it.\n"
    steps = ", ".join(f"{n:,}" for n in plan["paced_steps"])
    bv = plan["burst_viewers"]
    bt = plan["burst_tokens"]
    bd = plan["burst_deadline"]
    pt = plan["paced_tokens"]
    pr = plan["paced_rate"]
    iv = plan["idle_viewers"]
    st = plan["stall_tokens"]
    fill = plan["stall_fill"]
    sf = plan["stall_fraction"]
    ms = plan["memory_stalled"]
    mf = plan["memory_fill"]
    # The scale-out section comes from its own benchmark's results: redrawing this document
    # must not drop it (bench.scale_out, in turn, rewrites only that section).
    scale_out = scale_out_report.saved_section()
    pointer = f"\n{scale_out_report.POINTER}\n" if scale_out else ""
    long_lines = long_line.saved_section()
    ab_section = ab.saved_section()
    return f"""# Benchmarks

fanout consumes one upstream stream per prompt and fans its deltas out to every viewer of a
room. These benchmarks put it next to minimal, honest implementations of the same job, all fed
by the same mock upstream, on one server core: what it delivers in a burst, how many viewers
it serves at a real model's pace, what an idle viewer costs, and what readers that never read
do to everyone else. Everything below was generated by `make bench` on {date}; the raw
numbers are in `bench/results.json`.

## Verdicts

{verdicts.table(saved)}

A verdict compares medians over {rounds} rounds of one run; the tables below give min and max,
CPU use, and notes where the load generator or a busy machine may have limited a number.
{pointer}
## Machine

{_machine(machine)}

Other engineers work on this machine at the same time, so a run can share CPU 0 or 1 with
their tests: the load average above, and the "CPU 0 shared" notes below (the busy time of
CPU 0 minus the server's own CPU time was 10% of a core or more), say when that happened.

## Commands

```sh
make bench                    # this document: installs the bench extra, runs everything
python -m bench.run --quick   # a smoke run in seconds: tiny numbers, prints the tables only
python -m bench.run --systems fanout,websockets --scenarios burst,paced --out subset.md
python -m bench.run --from-results   # redraw this document from bench/results.json
python -m bench.profile       # py-spy profile of fanout during one burst (bench/profile.md)
python -m bench.long_line     # the SSE decoder on one long upstream line (its own section)
python -m bench.ab --baseline CHECKOUT   # this code against another checkout (its own section)
```

Every scenario starts a fresh server process. Rounds alternate between systems: round 1 runs
every scenario for fanout, then websockets, python-socketio, the raw floor and the SSE proxy,
then round 2 does the same, and so on. The mock upstreams are `python -m server mock-upstream
--port M --tokens-per-second R --ttft 0` (R = 0 and {pr:g}), on CPU 1.

## Systems

{_systems()}

Each peer answers a client's prompt frame (`{{"type":"prompt",...}}`, or a socket.io
`prompt` event) with one streaming POST to the mock, reads it with aiohttp and `json.loads`,
and sends every content delta as a frame shaped like fanout's
(`{{"type":"delta","seq":n,"turn":"t1","choices":[{{"index":0,"content":"..."}}]}}`),
between a `turn.start` and a `turn.end`. Their code is in `bench/peers/`, a few dozen lines
each.

## How it is measured

- **Tokens carry their send time.** The mock's `mock-stamp-N` model streams N tokens whose
  text is the wall-clock time at which the mock wrote them. A viewer's latency for a token is
  its receipt time minus that stamp (same machine, same clock): upstream chunk to viewer
  receipt, through the whole server. A delivery is one token reaching one viewer: when fanout
  merges the deltas of a viewer that fell behind (the protocol allows it, losslessly), the
  merged frame counts as the tokens it carries. The burst table also gives frames/s.
- **The load generator** (this process, pinned to CPU 1, on uvloop) speaks WebSocket itself,
  as an asyncio protocol that parses frames in `data_received`; for socket.io it speaks
  engine.io v4 over that WebSocket (python-socketio's client, and aiohttp's `ws_connect`,
  wake a task per message and saturated the generator near 100k frames/s). One viewer in ten
  is a *probe*: it reads every frame as it arrives and gives the latencies. The others are
  *sinks*: during a turn they read only once 2-6 kB have arrived (`SO_RCVLOWAT`, a threshold
  of its own per sink, 4 kB on average, so that they do not all wake on the same round), so
  that one core can keep thousands of viewers drained; they still read and count every
  token, and the server cannot tell them from probes. Between turns they read frame by
  frame, to answer pings. The SSE proxy's viewers are aiohttp streaming GETs, all probes.
- **CPU.** Each row gives the server's CPU time over the turn's wall time (from
  `/proc/PID/stat`) and the load generator's (`getrusage`). A turn where the generator used
  90% of its core or more is marked *generator saturated*; one where CPU 1 as a whole (the
  generator, the mock, the kernel's loopback work, other users) was 90% busy is marked
  *CPU 1 full*: its numbers may be the generator's limit rather than the server's.
- **Upstream requests** are counted by the mock itself (`GET /v1/_stats`) before and after
  each turn.

## Burst

{bv:,} viewers, one answer of {bt:,} deltas written by the mock as fast
as it can. Deliveries/s = tokens received by all viewers / (last receipt - first receipt);
frames/s counts WebSocket frames instead: fanout sends the chunks that reach it together as
one delta, the peers one frame per chunk.
A turn still running after {bd:g} s is cut there: its rate counts what arrived.

{report.burst_table(records)}
{burst_chart}
## Paced

Answers of {pt} tokens at {pr:g} tokens/s (a real model streams 60-180), one
per step, with the room growing: {steps} viewers. A system stops growing after a step where
its p99 exceeded {FALLS_APART_SECONDS * 1000:.0f} ms or tokens were lost (not delivered within the
answer's length plus {PACED_GRACE:g} s, or nothing arrived for {IDLE_SECONDS:g} s). Latencies
are the probes' (one viewer in ten).

{report.paced_table(records)}
{paced_chart}
## Idle memory

Server RSS (`VmRSS` of `/proc/PID/status`) after one viewer and a short warm-up answer, then
again one second after {iv:,} more viewers joined and sat idle. The SSE proxy has no idle
viewers (a viewer is a request with its own upstream stream), so it is not in this table.

{report.idle_table(records)}

## Stalled readers

{stalled_n} viewers ({sf:.0%} of {stall_total:,}) complete the handshake and never read again. A
reader that does not read only hurts once the kernel and transport buffers in front of it
are full; on this machine the server's kernel alone took 50 to 500 kB per stalled socket
(it grows a send buffer over time) before its process saw anything: at 80 tokens/s, up to an
hour of deltas. So: {healthy:,} healthy viewers get an answer of {st:,} tokens at {pr:g}
tokens/s (without); then all but one hang up, the stalled readers join, a filler answer of
{fill:,} chunks of about 1 kB (the mock's `mock-flood-{fill}`, not paced) fills their buffers
as a long-lived room would, the healthy viewers join again, and the same answer is measured
with the stalled readers there (with). All in one server process. Stalled readers connect
with a 1460-byte MSS and a 4 kB receive buffer, as across a real network path (over
loopback's 64 kB segments the kernel would buffer even more). RSS growth is over each
measured answer. The answers are {st:,} tokens long ({st / pr:g} s) so that each p99 rests on
enough samples: with 200-token answers the target's 10% band (about 1 ms of a 10 ms p99) was
inside the run-to-run noise; in a check of that scenario alone over 5 rounds, fanout's ratio
ranged 0.83-1.22 and websockets.broadcast's, whose loop has no per-reader state at all,
0.55-1.31.

{report.stalled_table(records)}

## Memory kept for stalled readers

One viewer and one answer of {mf:,} chunks of about 1 kB (`mock-flood-{mf}`, about
{mf / 1000:.1f} MB of text) as fast as the mock writes, in a fresh server process; then the
same in another fresh process with {ms} stalled readers (as above) connected. The first
process's growth over the answer is what one answer adds whoever watches (fanout keeps the
room's history: its retained event log and the newest turns' text); what the stalled readers
cost is the second process's growth less that, per reader, set against what each viewer was
sent. (One big answer per process: fanout sends a room's earlier answers upstream as history,
and a second 1.7 MB answer in the same room makes a request the mock refuses as too large.)
fanout bounds a subscriber's backlog at `limits.outbox_bytes` (1 MiB by default: queued
deltas are merged first, then the subscriber is closed with 4000); the verdict's bound adds
one transport buffer (64 KiB) and 256 KiB of slack. The last column says whether the
healthy viewer still got the whole answer. The SSE proxy is left out: each of its readers
has its own upstream stream, which a stall simply backs up.

{report.memory_table(records)}

## Upstream requests per prompt

{report.requests_table(records)}

## What limits fanout

{LIMITS}

{profile}
{long_lines}
{ab_section}
{scale_out}"""
