"""Options of the image store: ``[image]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup("image", title="Image store", help="Where imported images are kept.")

OPTS = [
    cfg.StrOpt(
        "store_path",
        default="$state_path/images",
        help="Directory where the scheduler keeps imported images (one "
        "sub-directory per image) and where agents read them from. With "
        "several hosts it must be shared (an NFS mount, say) at the same "
        "path on the scheduler and every agent.",
    ),
    cfg.IntOpt(
        "max_image_gb",
        default=64,
        min=1,
        help="Largest image file, in GiB, that image import accepts.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
