"""The tenant portal's pages: one module per area (auth, dashboard, apps, …), all on ``PortalView``."""
