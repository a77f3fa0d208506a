package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrKeyFile is wrapped by every refusal to use a key file: a private key
// that others can read (or that someone else owns) may have been copied or
// replaced, and a signature made with it proves nothing.
var ErrKeyFile = errors.New("audit: unusable key file")

// Key is the sidecar's signing key.
type Key struct {
	ID      string
	Private ed25519.PrivateKey
	Public  ed25519.PublicKey
}

// KeyID names a public key: "ed25519:" and the first 8 bytes of its sha256.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(h[:8])
}

// Sign signs msg.
func (k *Key) Sign(msg []byte) []byte { return ed25519.Sign(k.Private, msg) }

// LoadOrCreateKey loads the PKCS#8 PEM Ed25519 key at path, creating it
// (mode 0600, exclusively, so two sidecars starting at once cannot both
// write it) when it does not exist. created reports whether it did. An
// existing file must be a regular file owned by this process's user with no
// group or other permission bits.
func LoadOrCreateKey(path string) (k *Key, created bool, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		defer f.Close()
		pub, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, false, fmt.Errorf("audit: generate key: %w", gerr)
		}
		der, merr := x509.MarshalPKCS8PrivateKey(priv)
		if merr != nil {
			return nil, false, fmt.Errorf("audit: encode key: %w", merr)
		}
		if werr := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); werr != nil {
			_ = os.Remove(path)
			return nil, false, fmt.Errorf("audit: write key %s: %w", path, werr)
		}
		if serr := f.Sync(); serr != nil {
			_ = os.Remove(path)
			return nil, false, fmt.Errorf("audit: write key %s: %w", path, serr)
		}
		return &Key{ID: KeyID(pub), Private: priv, Public: pub}, true, nil
	case errors.Is(err, fs.ErrExist):
		k, err := loadKey(path)
		return k, false, err
	default:
		return nil, false, fmt.Errorf("audit: create key %s: %w", path, err)
	}
}

func loadKey(path string) (*Key, error) {
	// Lstat: a symlink could point the sidecar at someone else's file.
	st, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("audit: key %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrKeyFile, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; it must not be accessible to group or others (chmod 600 %s)",
			ErrKeyFile, path, perm, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		return nil, fmt.Errorf("%w: %s is owned by uid %d, not by this process (uid %d)",
			ErrKeyFile, path, sys.Uid, os.Getuid())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: read key %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s holds no PEM PRIVATE KEY", ErrKeyFile, path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s holds a %T, not an Ed25519 key", ErrKeyFile, path, parsed)
	}
	pub := priv.Public().(ed25519.PublicKey)
	return &Key{ID: KeyID(pub), Private: priv, Public: pub}, nil
}

// Querier is what the package needs of a connection or transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// RegisterKey records the public key in ruvector.healing_audit_keys (once).
func RegisterKey(ctx context.Context, q Querier, k *Key) error {
	_, err := q.Exec(ctx, `INSERT INTO ruvector.healing_audit_keys (key_id, public_key) VALUES ($1, $2)
		ON CONFLICT (key_id) DO NOTHING`, k.ID, []byte(k.Public))
	if err != nil {
		return fmt.Errorf("audit: register key %s: %w", k.ID, err)
	}
	return nil
}
