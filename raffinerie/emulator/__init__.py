"""The HGCROCv3 hexaboard emulator: register model, response model, zmq servers."""
