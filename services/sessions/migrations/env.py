from services.sessions.models import metadata
from shared.schema import run_env

run_env(metadata)
