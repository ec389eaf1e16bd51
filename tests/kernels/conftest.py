def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of CPU (the offline GPU compile of every kernel launch)")
