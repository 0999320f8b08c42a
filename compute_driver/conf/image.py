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
    cfg.StrOpt(
        "import_path",
        default="$state_path/import",
        help="Directory the scheduler imports images from. ``image import NAME "
        "FILE`` names FILE (and ``--kernel``, ``--initrd``) relative to this "
        "directory; the scheduler opens it without following symbolic links "
        "or '..', takes regular files only, and copies it into the image "
        "store. Put only files meant to become images here: whoever can call "
        "the scheduler API can import any file in it. Related options: "
        "store_path, max_image_gb.",
    ),
    cfg.IntOpt(
        "max_image_gb",
        default=64,
        min=1,
        help="Largest image file, in GiB, that image import accepts (counted "
        "while the file is copied). Kernels and initrds have the same bound.",
    ),
    cfg.IntOpt(
        "max_virtual_gb",
        default=4096,
        min=1,
        help="Largest virtual disk, in GiB, that an imported image may describe "
        "(a 1 EiB qcow2 is a few hundred bytes). Related options: max_image_gb.",
    ),
    cfg.ListOpt(
        "vmdk_allowed_types",
        default=["monolithicSparse", "streamOptimized"],
        help="VMDK create-types that image import accepts (they are converted "
        "to qcow2). Only types whose data lives in the one file are safe: "
        "monolithicFlat, twoGbMaxExtent* and vmfs name extent files, which "
        "could be any file on the scheduler's host. An image with an extent "
        "other than itself is refused whatever this says. As Nova's "
        "``[image] vmdk_allowed_types``; an empty list refuses every VMDK.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
