package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

// blobFetcher downloads blobs of one repository into a staging directory,
// resuming partial downloads with HTTP Range requests and verifying each
// blob's size and digest before it is renamed to its final staged name.
type blobFetcher struct {
	client   *http.Client // authenticated for repo
	repo     name.Repository
	dir      string
	retries  int
	progress Progress
}

// stagedPath is where a verified blob lies in the staging directory.
func (f *blobFetcher) stagedPath(d v1.Hash) string {
	return filepath.Join(f.dir, d.Algorithm+"-"+d.Hex)
}

// shortID is the 12-hex-digit form Docker prints for a blob.
func shortID(h v1.Hash) string {
	if len(h.Hex) > 12 {
		return h.Hex[:12]
	}
	return h.Hex
}

// fetch downloads the blob d describes and returns the path of the verified
// copy. Nothing is left under the final name unless it matched the digest.
func (f *blobFetcher) fetch(ctx context.Context, d v1.Descriptor) (string, error) {
	final := f.stagedPath(d.Digest)
	if fi, err := os.Stat(final); err == nil && fi.Size() == d.Size {
		f.progress.Done(shortID(d.Digest), "Download complete")
		return final, nil
	}
	if d.Digest.Algorithm != "sha256" {
		return "", classed(errdefs.ErrInvalidArgument, nil, "blob "+d.Digest.String()+": unsupported digest algorithm")
	}
	if d.Size < 0 {
		return "", classed(errdefs.ErrCorrupt, nil, "blob "+d.Digest.String()+": negative size in manifest")
	}
	part, err := f.lockPartial(ctx, final+".partial")
	if err != nil {
		return "", err
	}
	defer part.Close() // releases the lock
	// Another pull may have finished this blob while we waited for the lock.
	if fi, err := os.Stat(final); err == nil && fi.Size() == d.Size {
		f.progress.Done(shortID(d.Digest), "Download complete")
		return final, nil
	}
	if err := f.download(ctx, d, part); err != nil {
		return "", err
	}
	if err := os.Rename(part.Name(), final); err != nil {
		return "", fmt.Errorf("stage blob %s: %w", d.Digest, err)
	}
	f.progress.Done(shortID(d.Digest), "Download complete")
	return final, nil
}

// lockPartial opens path and takes an exclusive lock on it, waiting while
// another process holds it.
func (f *blobFetcher) lockPartial(ctx context.Context, path string) (*os.File, error) {
	for {
		file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open staging file %s: %w", path, err)
		}
		err = unix.Flock(int(file.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// The holder before us may have renamed the file away.
			if fi, serr := os.Stat(path); serr == nil && os.SameFile(fi, mustStat(file)) {
				return file, nil
			}
			file.Close()
			continue
		}
		file.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock staging file %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func mustStat(f *os.File) os.FileInfo {
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	return fi
}

// download fills part with the blob, resuming from what part already holds,
// and checks the result. On a verification failure part is truncated.
func (f *blobFetcher) download(ctx context.Context, d v1.Descriptor, part *os.File) error {
	id := shortID(d.Digest)
	h := sha256.New()
	fi, err := part.Stat()
	if err != nil {
		return fmt.Errorf("stat staging file for %s: %w", d.Digest, err)
	}
	offset := fi.Size()
	if offset > d.Size {
		offset = 0
	}
	if offset > 0 {
		if _, err := io.Copy(h, io.NewSectionReader(part, 0, offset)); err != nil {
			return fmt.Errorf("read staging file for %s: %w", d.Digest, err)
		}
	}
	if err := part.Truncate(offset); err != nil {
		return fmt.Errorf("truncate staging file for %s: %w", d.Digest, err)
	}
	f.progress.Start(id, d.Size)
	f.progress.Add(id, offset)
	for attempt := 0; offset < d.Size || (d.Size == 0 && attempt == 0); attempt++ {
		var n int64
		n, offset, err = f.get(ctx, d, part, h, offset)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !retryable(err) || attempt >= f.retries {
			if errors.Is(err, errdefs.ErrCorrupt) {
				_ = part.Truncate(0)
			}
			return err
		}
		if n == 0 { // no progress: back off before trying again
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
			}
		}
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); offset != d.Size || got != d.Digest.String() {
		_ = part.Truncate(0)
		return classed(errdefs.ErrCorrupt, nil, fmt.Sprintf(
			"blob %s: content does not match its digest (got %s, %d of %d bytes)", d.Digest, got, offset, d.Size))
	}
	return nil
}

// retryable reports whether a failed blob GET is worth resuming.
func retryable(err error) bool {
	switch {
	case errors.Is(err, errdefs.ErrCorrupt), errors.Is(err, errdefs.ErrNotFound),
		errors.Is(err, errdefs.ErrUnauthorized), errors.Is(err, errdefs.ErrInvalidArgument):
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Temporary()
	}
	return true
}

// get issues one GET for the rest of the blob from offset and appends what
// arrives to part and h. It returns the bytes received and the new offset.
func (f *blobFetcher) get(ctx context.Context, d v1.Descriptor, part *os.File, h hash.Hash, offset int64) (int64, int64, error) {
	u := fmt.Sprintf("https://%s/v2/%s/blobs/%s", f.repo.RegistryStr(), f.repo.RepositoryStr(), d.Digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, offset, err
	}
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, offset, err
	}
	defer resp.Body.Close()
	id := shortID(d.Digest)
	switch resp.StatusCode {
	case http.StatusOK:
		if offset > 0 { // the server ignored Range: start over
			if err := part.Truncate(0); err != nil {
				return 0, offset, err
			}
			h.Reset()
			offset = 0
			f.progress.Start(id, d.Size)
		}
	case http.StatusPartialContent:
		if start, ok := contentRangeStart(resp.Header.Get("Content-Range")); !ok || start != offset {
			return 0, offset, fmt.Errorf("blob %s: registry answered range %q to a request from byte %d",
				d.Digest, resp.Header.Get("Content-Range"), offset)
		}
	case http.StatusNotFound:
		return 0, offset, classed(errdefs.ErrNotFound, nil,
			"blob "+d.Digest.String()+" is listed in the manifest but missing from the registry")
	default:
		return 0, offset, transport.CheckError(resp, http.StatusOK, http.StatusPartialContent)
	}
	if _, err := part.Seek(offset, io.SeekStart); err != nil {
		return 0, offset, err
	}
	// Read at most one byte more than expected to notice oversized blobs.
	body := io.LimitReader(resp.Body, d.Size-offset+1)
	n, err := io.Copy(io.MultiWriter(part, h, progressAdder{f.progress, id}), body)
	offset += n
	if err != nil {
		return n, offset, fmt.Errorf("blob %s: %w after %d of %d bytes", d.Digest, err, offset, d.Size)
	}
	if offset > d.Size {
		return n, offset, classed(errdefs.ErrCorrupt, nil, fmt.Sprintf(
			"blob %s: registry sent more than the %d bytes the manifest declares", d.Digest, d.Size))
	}
	if offset < d.Size {
		return n, offset, fmt.Errorf("blob %s: %w after %d of %d bytes", d.Digest, io.ErrUnexpectedEOF, offset, d.Size)
	}
	return n, offset, nil
}

// contentRangeStart parses the first byte position of "bytes START-END/SIZE".
func contentRangeStart(s string) (int64, bool) {
	s, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, false
	}
	start, _, ok := strings.Cut(s, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(start, 10, 64)
	return n, err == nil
}

// progressAdder reports bytes written through it.
type progressAdder struct {
	p  Progress
	id string
}

func (a progressAdder) Write(b []byte) (int, error) {
	a.p.Add(a.id, int64(len(b)))
	return len(b), nil
}
