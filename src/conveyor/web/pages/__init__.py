"""One module per page family; each exports an APIRouter."""
