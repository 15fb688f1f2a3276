import sys

from tempwatch.cli import main

sys.exit(main())
