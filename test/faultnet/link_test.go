package faultnet

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echoServer answers each line with the same line.
func echoServer(t *testing.T) (string, chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					got <- line
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String(), got
}

func roundTrip(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestLink_ModesCutDelayAndDropReplies(t *testing.T) {
	target, got := echoServer(t)
	l, err := Listen("a->b", target, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if r, err := roundTrip(l.Addr(), "hello"); err != nil || r != "hello\n" {
		t.Fatalf("up: %q %v", r, err)
	}
	<-got
	l.SetMode(Down)
	if _, err := roundTrip(l.Addr(), "cut"); err == nil {
		t.Fatalf("a cut link carried a round trip")
	}
	select {
	case m := <-got:
		t.Fatalf("a cut link delivered %q", m)
	case <-time.After(100 * time.Millisecond):
	}
	l.SetMode(DropReplies)
	if _, err := roundTrip(l.Addr(), "req"); err == nil {
		t.Fatalf("drop-replies delivered the reply")
	}
	select {
	case m := <-got:
		if m != "req\n" {
			t.Fatalf("target got %q", m)
		}
	case <-time.After(time.Second):
		t.Fatalf("drop-replies did not deliver the request")
	}
	l.SetMode(HoldReplies)
	if _, err := roundTrip(l.Addr(), "held"); err == nil {
		t.Fatalf("hold-replies delivered the reply within the deadline")
	}
	select {
	case m := <-got:
		if m != "held\n" {
			t.Fatalf("target got %q", m)
		}
	case <-time.After(time.Second):
		t.Fatalf("hold-replies did not deliver the request")
	}
	l.Heal()
	l.SetDelay(50 * time.Millisecond)
	start := time.Now()
	if r, err := roundTrip(l.Addr(), "slow"); err != nil || r != "slow\n" {
		t.Fatalf("slow: %q %v", r, err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("round trip took %v through a 50ms-each-way link", el)
	}
}
