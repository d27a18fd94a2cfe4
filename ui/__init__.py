"""The dashboard's Streamlit helpers (session, shared views); never served as pages."""
