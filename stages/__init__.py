"""DVC stage scripts: thin Hydra apps that wire config to the datamap library.

Under DVC, ``python -m stages.X`` hands its command to a server that has torch and Lightning
imported already and runs the stage in a fork of it (see ``datamap.preload``): this runs before
the stage module is imported, so a stage process that hands over imports nothing heavy itself.
"""

from datamap.preload import hand_over

hand_over()
