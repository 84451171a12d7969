"""datamap's OmegaConf resolvers, registered whenever Hydra starts.

Hydra imports every module of the ``hydra_plugins`` namespace package when it starts, in a
stage script, in ``datamap compose`` and in DVC's composition of ``params.yaml`` on
``dvc exp run`` alike; importing this module registers ``datamap.all_specs``
(:mod:`datamap.selection.specs`), which ``conf/selection/default.yaml`` uses. It defines no Hydra
plugin.
"""

from datamap.selection.specs import register_resolvers

register_resolvers()
