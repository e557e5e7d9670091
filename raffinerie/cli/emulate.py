"""`raff emulator`: the HGCROCv3 hexaboard emulator as a standalone backend."""

from __future__ import annotations

import signal
import sys

from raffinerie.cli.numbers import COUNT, FRACTION, PORT, SEED, TRIGGER_RATE, board_channel
from raffinerie.errors import RaffError

GENERATIONS = ("menus", "2021")
BOARDS = ("LD", "HD")
SLOW_CONTROLS = ("hcc", "zmq-i2c")


def emulator_command(args) -> int:
    import zmq

    from raffinerie.config.daqconfig import Generation
    from raffinerie.emulator.server import Emulator, Options, announce_line
    from raffinerie.lifetime import die_with_parent
    from raffinerie.emulator.wire import Faults
    from raffinerie.tuning import tune_allocator

    die_with_parent()
    tune_allocator()
    faults = Faults(drop_after=args.drop_after, bitslip=args.bitslip, align_retries=args.align_retries,
                    error_on=frozenset(c.lower() for c in args.error_on or []),
                    silent_after=args.silent_after)
    options = Options(host=args.host, server_port=args.server_port, target_port=args.target_port,
                      client_port=args.client_port, data_port=args.data_port,
                      generation=Generation(args.generation), slow_control=args.slow_control,
                      seed=args.seed, board=args.board, rate=args.trigger_rate, log=args.log, faults=faults,
                      dead=tuple(args.dead_channel or ()), noisy=tuple(args.noisy_channel or ()),
                      untunable=tuple(args.untunable_channel or ()))
    if args.trigger_rate is not None and args.trigger_rate <= 0:
        raise RaffError(f"--trigger-rate must be positive, got {args.trigger_rate}")
    _check_channels(options)
    try:
        emulator = Emulator(options)
    except zmq.ZMQError as exc:
        raise RaffError(f"cannot open the emulator's sockets on {args.host}: {exc}") from None

    def stop(*_):
        emulator.stopped = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.announce:
        print(announce_line(emulator), flush=True)
    else:
        a = emulator.announcement()
        # as the real servers do: the menus daq server binds it at `initialize`, the 2021 one (which
        # has no initialize) at `configure` (raffinerie.emulator.daqserver)
        when = "configure" if a["generation"] == "2021" else "initialize"
        data = f"tcp://{a['host']}:{a['data']}" if a["data"] else f"bound at {when} on the daq config's zmqPushPull_port"
        print(f"raff emulator ({args.board} hexaboard, seed {args.seed}, {a['generation']} generation, {a['slow_control']} "
              f"slow control): daq server tcp://{a['host']}:{a['server']}, slow control "
              f"tcp://{a['host']}:{a['target']}, daq-client tcp://{a['host']}:{a['client']}, "
              f"data {data}; Ctrl-C stops", flush=True)
    try:
        emulator.serve()
    finally:
        emulator.close()
        sys.stdout.flush()
    return 0


def _check_channels(options) -> None:
    """A defect seeded on a chip the board does not have is an error, not an ignored flag."""
    from raffinerie.hgcroc import CHIPS_PER_BOARD

    chips = CHIPS_PER_BOARD[options.board]
    for flag, channels in (("--dead-channel", options.dead), ("--noisy-channel", options.noisy),
                           ("--untunable-channel", options.untunable)):
        for chip, channel in channels:
            if chip >= chips:
                raise RaffError(f"{flag} {chip}:{channel}: an {options.board} hexaboard has chips 0 to "
                                f"{chips - 1} (--board HD has 6)")


def add_parser(sub) -> None:
    p = sub.add_parser("emulator", help="run the HGCROCv3 hexaboard emulator (daq, slow control, daq-client)",
                       description="Serve the hexactrl-sw protocols of an emulated LD or HD hexaboard, as the "
                                   "real programs do: a daq server (REQ/REP) with its data PUSH socket, a "
                                   "slow-control server (REQ/REP) and a daq-client (REQ/REP) that pulls "
                                   "the data stream and writes .raw files. It can stand in for a "
                                   "hexacontroller and a DAQ PC on another machine. Port 0 picks a free port.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--generation", choices=GENERATIONS, default="menus",
                   help="hexactrl-sw generation of the daq server and daq-client (default menus)")
    p.add_argument("--slow-control", choices=SLOW_CONTROLS,
                   help="slow-control protocol (default: hcc for menus, zmq-i2c for 2021)")
    p.add_argument("--server-port", type=PORT, default=6000, metavar="P", help="daq server port (6000)")
    p.add_argument("--target-port", type=PORT, default=5555, metavar="P", help="slow-control port (5555)")
    p.add_argument("--client-port", type=PORT, default=6001, metavar="P", help="daq-client port (6001)")
    p.add_argument("--data-port", type=PORT, metavar="P",
                   help="bind the data PUSH socket at start-up on P (0 = a free port) and ignore the "
                        "daq config's zmqPushPull_port. Default: like the real servers, bind it when "
                        "configured (menus: at initialize; 2021: at configure) on the config's "
                        "zmqPushPull_port (8888)")
    p.add_argument("--trigger-rate", type=TRIGGER_RATE, metavar="HZ",
                   help="L1A rate: a run of NEvents lasts NEvents/HZ seconds (default: as fast as possible)")
    p.add_argument("--board", choices=BOARDS, default="LD",
                   help="the hexaboard: LD (3 ROCs, the default) or HD (6 ROCs); a daq config's NChips "
                        "may be fewer (the first ROCs are read), never more")
    p.add_argument("--seed", type=SEED, default=0, help="board seed: one seed is one board (0)")
    p.add_argument("--announce", action="store_true",
                   help="print one JSON line first: host, server, target, data (null until bound), "
                        "client, generation, slow_control, board, pid")
    p.add_argument("--log", metavar="FILE", help="append one JSON line per request and per run to FILE")
    faults = p.add_argument_group("fault injection (for tests)")
    faults.add_argument("--drop-after", type=COUNT, metavar="N",
                        help="the data stream loses everything after N events of a run, END_OF_RUN included")
    faults.add_argument("--bitslip", type=FRACTION, default=0.0, metavar="F",
                        help="fraction of records with a 2-bit serial-link slip")
    faults.add_argument("--align-retries", type=COUNT, default=0, metavar="K",
                        help="`start` does not reach running K times per run (links not aligned)")
    faults.add_argument("--error-on", action="append", metavar="COMMAND",
                        help="COMMAND fails the way its server fails (repeatable)")
    faults.add_argument("--silent-after", type=COUNT, metavar="N", help="stop answering after N requests")
    faults.add_argument("--dead-channel", type=board_channel, action="append", metavar="CHIP:CHANNEL",
                        help="that channel of the board is dead: stuck at its pedestal (repeatable)")
    faults.add_argument("--noisy-channel", type=board_channel, action="append", metavar="CHIP:CHANNEL",
                        help="that channel of the board is noisy: 5 ADC of noise (repeatable)")
    faults.add_argument("--untunable-channel", type=board_channel, action="append", metavar="CHIP:CHANNEL",
                        help="that channel's pedestal and TOA and TOT thresholds lie beyond what its trims "
                             "reach (repeatable): the tuning chain must flag it")
    p.set_defaults(func=lambda args: emulator_command(args))
