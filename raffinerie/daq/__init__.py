"""The DAQ edge: the hexactrl raw format, summary statistics, the zmq client."""
