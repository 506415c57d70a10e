import sys

from fiona_cli.main import main

sys.exit(main())
