import sys

from deploy.validate import main

sys.exit(main())
