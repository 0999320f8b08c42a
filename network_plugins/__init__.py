"""Network plugins (namespace ``compute_driver.network``): one module per plugin."""
