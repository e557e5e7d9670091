"""`raff emulator`: the HGCROCv3 hexaboard emulator as a standalone backend."""

from __future__ import annotations

import signal

from raffinerie.errors import RaffError


def emulator_command(args) -> int:
    import zmq

    from raffinerie.emulator.server import EmulatorServer, Faults

    faults = Faults(drop_after=args.drop_after, bitslip=args.bitslip, align_retries=args.align_retries,
                    error_on=set(args.error_on or []), silent_after=args.silent_after)
    try:
        server = EmulatorServer(args.host, args.server_port, args.target_port, args.data_port,
                                args.seed, faults)
    except zmq.ZMQError as exc:
        raise RaffError(f"cannot open the emulator's sockets on {args.host}: {exc}") from None
    p = server.ports
    if args.announce:
        print(p.as_json(), flush=True)
    else:
        print(f"raff emulator (seed {args.seed}): daq server tcp://{p.host}:{p.server}, "
              f"target tcp://{p.host}:{p.target}, data tcp://{p.host}:{p.data}; Ctrl-C stops",
              flush=True)

    def stop(*_):
        server.stopped = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve()
    finally:
        server.close()
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("emulator", help="run the HGCROCv3 hexaboard emulator (daq + target servers)",
                       description="Serve the hexactrl-sw protocol for an emulated LD hexaboard: a daq "
                                   "server (REQ/REP) with a data PUSH socket, and a target i2c server "
                                   "(REQ/REP). It can stand in for a hexacontroller on another machine. "
                                   "Port 0 picks a free port.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--server-port", type=int, default=6000, metavar="P", help="daq server port (6000)")
    p.add_argument("--target-port", type=int, default=5555, metavar="P", help="target i2c server port (5555)")
    p.add_argument("--data-port", type=int, default=8888, metavar="P", help="data PUSH port (8888)")
    p.add_argument("--seed", type=int, default=0, help="board seed: one seed is one board (0)")
    p.add_argument("--announce", action="store_true", help="print the ports as one JSON line")
    faults = p.add_argument_group("fault injection (for tests)")
    faults.add_argument("--drop-after", type=int, metavar="N", help="drop the data stream after N events")
    faults.add_argument("--bitslip", type=float, default=0.0, metavar="F",
                        help="fraction of records with a 2-bit serial-link slip")
    faults.add_argument("--align-retries", type=int, default=0, metavar="K",
                        help="`start` fails K times per run before the links align")
    faults.add_argument("--error-on", action="append", metavar="COMMAND",
                        help="answer COMMAND with an error (repeatable)")
    faults.add_argument("--silent-after", type=int, metavar="N", help="stop answering after N requests")
    p.set_defaults(func=lambda args: emulator_command(args))


