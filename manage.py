#!/usr/bin/env python
"""Django's command-line utility; ``argus`` is the installed equivalent."""

from argus.__main__ import main

if __name__ == "__main__":
    main()
