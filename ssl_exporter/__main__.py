from ssl_exporter.cli import main

raise SystemExit(main())
