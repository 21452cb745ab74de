import sys

from vitsim.cli import main

sys.exit(main())
