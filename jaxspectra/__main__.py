from jaxspectra.cli import main

raise SystemExit(main())
