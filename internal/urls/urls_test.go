package urls

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	u, _ := url.Parse("https://user:s3cret@licenses.example.com:8443/v1/check?token=abc#frag")
	if got := Redact(u); got != "https://licenses.example.com:8443/v1/check" {
		t.Errorf("Redact = %q", got)
	}
}

func TestCause(t *testing.T) {
	inner := errors.New("connection refused")
	err := &url.Error{Op: "Get", URL: "https://u:s3cret@x/?token=abc", Err: inner}
	if got := Cause(err); got != inner || strings.Contains(got.Error(), "s3cret") {
		t.Errorf("Cause = %v", got)
	}
	if plain := errors.New("plain"); Cause(plain) != plain {
		t.Error("a plain error changed")
	}
}
