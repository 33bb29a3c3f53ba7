"""The ``tokenmill`` command line: a thin shell over the same services the gateway uses."""
