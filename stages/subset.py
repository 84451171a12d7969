"""subset: select -> retrain -> evaluate for one spec (+spec=NAME) from the cached cartography
scores, as a Hydra app -- mostly for multiruns over a spec's fractions::

    python -m stages.subset -m +spec=ambiguous_33 \
        selection.specs.ambiguous_33.ambiguous=0.1,0.25,0.5

Each job writes under its own directory (multirun/<date>/<time>/<n>/); at the end one
comparison.md over the jobs lands in the sweep directory. Add hydra/launcher=parallel for local
parallel jobs (joblib) or hydra/launcher=slurm for a cluster (submitit): `pip install
datamap[sweeps]`.
"""

import hydra

from datamap.layout import Layout
from datamap.pipeline.multirun import job_description, job_dir, run_subset
from datamap.pipeline.stage import stage


@hydra.main(config_path="../conf", config_name="subset", version_base=None)
@stage
def main(cfg, inputs, outputs):
    run_subset(cfg, inputs, Layout(job_dir()), job=job_description())


if __name__ == "__main__":
    main()
