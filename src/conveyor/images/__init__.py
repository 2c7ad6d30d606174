"""Images made locally, for machines that cannot reach public registries: the Debian base images
pipelines build on (``debian.py``) and images of Conveyor itself for what runs in clusters
(``conveyor_image.py``: the agent, the runner's task container).

Public interface for other components (pipelines, clusters, demo, tests):
"""

from conveyor.images.conveyor_image import VARIANTS, conveyor_image
from conveyor.images.debian import DEFAULT_TAG, BaseImageError, build_and_import, push_archive, rootfs_tarball

__all__ = ["DEFAULT_TAG", "VARIANTS", "BaseImageError", "build_and_import", "conveyor_image", "push_archive",
           "rootfs_tarball"]
