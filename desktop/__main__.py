"""``python -m desktop`` runs the app like the ``instructir-studio`` command."""

import sys

from desktop.app import main

sys.exit(main())
