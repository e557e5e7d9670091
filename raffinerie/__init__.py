"""raffinerie: incremental acquisition and analysis of HGCROCv3 data."""

__version__ = "0.1.0"
