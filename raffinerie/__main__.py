from raffinerie.cli.main import main

raise SystemExit(main())
