"""The seed tutorial's FastAPI + PyJWT app, as the Python peer of the benchmarks.

The code below is the tutorial's ("Integrating JWT with FastAPI"), unchanged except where
marked BENCH: the tutorial calls `authenticate_user` without defining it, so this file adds
the usual FastAPI-docs version (a user table and a password hash check). The hash is Argon2id
with the same cost as Tessera's (m = 19 MiB, t = 2, p = 1, argon2-cffi), so the login
scenario compares the same work. Like the tutorial, the check runs inside the `async def`
endpoint, on the event loop.

Run: uvicorn fastapi_app:app --host 127.0.0.1 --port PORT (bench/run.sh does).
Tokens for the 10,000-token scenario: `python fastapi_app.py mint N FILE` signs N distinct
tokens exactly as `/token` would (they differ in `exp`).
"""

from fastapi import FastAPI, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel
from typing import Annotated
import jwt
from datetime import datetime, timedelta

# BENCH: the password check the tutorial leaves undefined.
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

app = FastAPI()

# Secret key for signing JWT
SECRET_KEY = "your-very-secret-key"
ALGORITHM = "HS256"
ACCESS_TOKEN_EXPIRE_MINUTES = 30

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")


class Token(BaseModel):
    access_token: str
    token_type: str


class User(BaseModel):
    username: str
    role: str


# BENCH: one user, `bench`, with the password bench/run.sh logs in with.
BENCH_PASSWORD = "quartz lantern under a staple moon"
password_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
fake_users_db = {
    "bench": {"username": "bench", "role": "user", "hashed_password": password_hasher.hash(BENCH_PASSWORD)},
}


def authenticate_user(username: str, password: str):  # BENCH
    user = fake_users_db.get(username)
    if not user:
        return None
    try:
        password_hasher.verify(user["hashed_password"], password)
    except VerificationError:
        return None
    return User(username=user["username"], role=user["role"])


def create_access_token(data: dict, expires_delta: timedelta = None):
    to_encode = data.copy()
    if expires_delta:
        expire = datetime.utcnow() + expires_delta
    else:
        expire = datetime.utcnow() + timedelta(minutes=15)
    to_encode.update({"exp": expire})
    encoded_jwt = jwt.encode(to_encode, SECRET_KEY, algorithm=ALGORITHM)
    return encoded_jwt


async def get_current_user(token: Annotated[str, Depends(oauth2_scheme)]):
    credentials_exception = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=[ALGORITHM])
        username: str = payload.get("sub")
        role: str = payload.get("role")
        if username is None:
            raise credentials_exception
        user = User(username=username, role=role)
    except jwt.ExpiredSignatureError:
        raise credentials_exception
    except jwt.InvalidTokenError:
        raise credentials_exception
    return user


@app.post("/token", response_model=Token)
async def login_for_access_token(form_data: OAuth2PasswordRequestForm = Depends()):
    user = authenticate_user(form_data.username, form_data.password)
    if not user:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    access_token_expires = timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES)
    access_token = create_access_token(
        data={"sub": user.username, "role": user.role}, expires_delta=access_token_expires
    )
    return {"access_token": access_token, "token_type": "bearer"}


@app.get("/users/me", response_model=User)
async def read_users_me(current_user: Annotated[User, Depends(get_current_user)]):
    return current_user


if __name__ == "__main__":  # BENCH: token minting for bench/run.sh.
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "mint":
        count, path = int(sys.argv[2]), sys.argv[3]
        with open(path, "w") as out:
            for i in range(count):
                token = create_access_token(
                    data={"sub": "bench", "role": "user"},
                    expires_delta=timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES, seconds=i),
                )
                out.write(token + "\n")
    else:
        sys.exit("usage: python fastapi_app.py mint COUNT FILE")
