from __future__ import annotations

from alembic import context

from conveyor.core.db import Base, make_engine
from conveyor.core.registry_of_models import import_all_models

import_all_models()
config = context.config
url = config.attributes["url"]

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
