"""DVC stage scripts: thin Hydra apps that wire config to the datamap library."""
