"""`python -m voxid` runs the command line."""

from voxid.cli import main

main()
