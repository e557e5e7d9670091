"""raffinerie's built-in analyses, used as `module: builtin.NAME`."""
